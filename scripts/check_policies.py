#!/usr/bin/env python3
"""Least-privilege checks over template.yaml's IAM policies (run by the integration tests).

Rules, each for a reason in docs/SECURITY.md:
- The HS256 signing key's secret (JwtSecret) is readable by the HTTP functions only; ingest,
  which parses untrusted files, reads the Coach secret alone, and upload-url and docs-refresh,
  which call no provider, read the signing key alone (upload-url also the Coach secret, for
  the database's password, only under the condition UsePostgres: the Postgres index store).
- No wildcard action or resource, and no dynamodb:Scan anywhere.
- s3:ListBucketVersions only under an s3:prefix condition.
(s3:ListBucket stays on the bucket without a condition for every function: each reads keys
that may be missing, and without it S3 answers 403 instead of 404 for those; chat's health
check is a HeadBucket. An s3:prefix condition would turn both into 403s.)
Exit status 1 with one line per violation.
"""
import sys
from cfnlint.decode import cfn_yaml

HTTP = {"ChatFunction", "ChatStreamFunction", "UploadUrlFunction", "DocsRefreshFunction"}
# The secrets each function may read.
SECRETS = {
    "ChatFunction": {"CoachSecret", "JwtSecret"},
    "ChatStreamFunction": {"CoachSecret", "JwtSecret"},
    "UploadUrlFunction": {"JwtSecret"},
    "DocsRefreshFunction": {"JwtSecret"},
    "IngestFunction": {"CoachSecret"},
}
# Secrets a function may read only under a template condition.
CONDITIONAL_SECRETS = {
    "UploadUrlFunction": {"CoachSecret": "UsePostgres"},
}


def as_list(value):
    return value if isinstance(value, list) else [value]


def statements(template, function):
    """Every statement of a function's policies, inline, through a managed policy, or under a
    condition (`Fn::If` with `AWS::NoValue`): (statement, condition or None)."""
    out = []

    def add(policy, condition):
        if isinstance(policy, dict) and "Fn::If" in policy:
            cond, yes, no = policy["Fn::If"]
            add(yes, cond)
            add(no, cond)
            return
        if isinstance(policy, dict) and "Ref" in policy:
            if policy["Ref"] == "AWS::NoValue":
                return
            policy = template["Resources"][policy["Ref"]]["Properties"]["PolicyDocument"]
        if isinstance(policy, dict) and "Statement" in policy:
            out.extend((st, condition) for st in policy["Statement"])

    for policy in function["Properties"].get("Policies", []):
        add(policy, None)
    return out


def refs(value):
    """Resource names a policy value points at (Ref and GetAtt)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            return {as_list(value["Fn::GetAtt"])[0]}
        return set().union(*(refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(refs(v) for v in value)) if value else set()
    return set()


def main(path):
    template = cfn_yaml.load(path)
    problems = []
    functions = {
        name: r for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    }
    missing = set(SECRETS) - set(functions)
    if missing:
        problems.append(f"functions not found: {sorted(missing)}")
    for name, function in functions.items():
        secrets_read = set()
        conditional = {}
        for st, condition in statements(template, function):
            actions = as_list(st.get("Action", []))
            resources = as_list(st.get("Resource", []))
            where = f"{name} {st.get('Sid', '?')}"
            if st.get("Effect") != "Allow":
                continue
            for action in actions:
                if action == "*" or action.endswith(":*"):
                    problems.append(f"{where}: wildcard action {action}")
                if action == "dynamodb:Scan":
                    problems.append(f"{where}: dynamodb:Scan")
            if "*" in resources:
                problems.append(f"{where}: wildcard resource")
            if "s3:ListBucketVersions" in actions and "s3:prefix" not in str(st.get("Condition", {})):
                problems.append(f"{where}: s3:ListBucketVersions without an s3:prefix condition")
            if "secretsmanager:GetSecretValue" in actions:
                if condition is None:
                    secrets_read |= refs(resources)
                else:
                    for secret in refs(resources):
                        conditional[secret] = condition
        allowed = SECRETS.get(name, set())
        for secret, condition in conditional.items():
            if secret in allowed:
                continue
            if CONDITIONAL_SECRETS.get(name, {}).get(secret) != condition:
                problems.append(f"{name}: reads {secret} under {condition}, which is not allowed")
        if secrets_read - allowed:
            problems.append(f"{name}: reads {sorted(secrets_read - allowed)}, allowed only {sorted(allowed)}")
        if name in HTTP and "JwtSecret" not in secrets_read:
            problems.append(f"{name}: an HTTP function that cannot read the signing key")
        env = function["Properties"].get("Environment", {}).get("Variables", {})
        if name in HTTP and env.get("COACH_JWT_SECRET_ID") != {"Ref": "JwtSecret"}:
            problems.append(f"{name}: COACH_JWT_SECRET_ID is not the signing key's secret")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
