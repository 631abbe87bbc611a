"""Scores retrieval runs on a CISI-format test collection (`make eval`).

    python scripts/eval.py COLLECTION_DIR RUNS.json [OUT.md]

RUNS.json is what `coach-eval` wrote: the ranked documents Coach's `POST /chat`
returned for each judged query. In the same run this script ranks the same documents
(title + abstract) with a plain BM25 library, `bm25s` (English stop words, default k1/b,
top 10), and scores every run with nDCG@10 and recall@10 (binary relevance) over the
judged queries. Prints a Markdown table and writes it to OUT.md when given.
"""

import json
import math
import sys
from pathlib import Path

import bm25s

DEPTH = 10


def records(path, fields):
    """Records of a CISI file: {id: {field: text}}; `.X` and unknown fields are dropped."""
    out, current, field = {}, None, None
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I "):
            current = out.setdefault(line[3:].strip(), {})
            field = None
        elif line.startswith(".") and len(line) == 2:
            field = line[1]
        elif current is not None and field in fields:
            current[field] = (current.get(field, "") + " " + line.strip()).strip()
    return out


def judgements(path):
    relevant = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            relevant.setdefault(parts[0], set()).add(parts[1])
    return relevant


def ndcg(ranked, relevant):
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:DEPTH]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), DEPTH)))
    return dcg / ideal


def recall(ranked, relevant):
    return len(set(ranked[:DEPTH]) & relevant) / len(relevant)


def score(run, relevant):
    queries = sorted(relevant)
    return (
        sum(ndcg(run.get(q, []), relevant[q]) for q in queries) / len(queries),
        sum(recall(run.get(q, []), relevant[q]) for q in queries) / len(queries),
    )


def bm25_library(docs, queries):
    ids = list(docs)
    corpus = [f"{docs[i].get('T', '')} {docs[i].get('W', '')}" for i in ids]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    run = {}
    for qid, text in queries.items():
        tokens = bm25s.tokenize([text], stopwords="en", show_progress=False)
        if not tokens.ids[0]:
            run[qid] = []
            continue
        results, _ = retriever.retrieve(tokens, k=DEPTH, show_progress=False)
        run[qid] = [ids[j] for j in results[0]]
    return run


def main():
    collection, coach_runs = Path(sys.argv[1]), Path(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    docs = records(collection / "CISI.ALL", {"T", "W"})
    relevant = judgements(collection / "CISI.REL")
    queries = {q: r.get("W", "") for q, r in records(collection / "CISI.QRY", {"W"}).items() if q in relevant}
    coach = json.loads(coach_runs.read_text())

    rows = [("BM25 library (bm25s, title + abstract)", score(bm25_library(docs, queries), relevant))]
    names = {"coach-bm25": "Coach, BM25 only (`COACH_EMBEDDING_PROVIDER=none`)",
             "coach-hybrid": "Coach, hybrid (`local`: all-MiniLM-L6-v2 + BM25)"}
    turns = {"conv-b": "(b) a follow-up naming nothing of Q, after Q",
             "conv-c": "(c) Q, after another judged query"}
    conversations = []
    scores = {}
    for key, run in coach["runs"].items():
        base_key, _, turn = key.partition("/")
        extra = [s for s in coach.get("run_settings", {}).get(key, []) if not s.startswith("COACH_EMBEDDING_PROVIDER=")]
        label = names.get(base_key, base_key) + (f" with {', '.join(f'`{s}`' for s in extra)}" if extra else "")
        scores[key] = score(run, relevant)
        if turn:
            conversations.append((label, turns.get(turn, turn), scores[key], scores[base_key]))
        else:
            rows.append((label, scores[key]))
    base = rows[0][1][0]
    lines = [
        f"{len(docs)} documents, {len(relevant)} judged queries; nDCG@{DEPTH} and recall@{DEPTH}, binary relevance.",
        "",
        f"| run | nDCG@{DEPTH} | recall@{DEPTH} | nDCG vs library |",
        "|---|---|---|---|",
    ]
    for name, (n, r) in rows:
        lines.append(f"| {name} | {n:.3f} | {r:.3f} | {100 * (n / base - 1):+.0f}% |")
    if conversations:
        lines += [
            "",
            f"Conversations, scored against Q's judgements; (a) is Q alone (above).",
            "",
            f"| run | turn | nDCG@{DEPTH} | recall@{DEPTH} | of (a) |",
            "|---|---|---|---|---|",
        ]
        for name, turn, (n, r), (a, _) in conversations:
            lines.append(f"| {name} | {turn} | {n:.3f} | {r:.3f} | {100 * n / a:.0f}% |")
    settings = ", ".join(f"{k}={v}" for k, v in sorted(coach.get("settings", {}).items()))
    lines += ["", f"Coach settings: {settings}.", f"Ingest: {coach.get('ingest_seconds', 0):.0f} s."]
    text = "\n".join(lines)
    print(text)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
