#!/usr/bin/env bash
# The compose test: a three-node mesh in containers (no registry needed), driven from the
# host with the host-built cmesh CLI.
#
#   1. scripts/docker-base (the local base image) and cargo build --release
#   2. docker compose -f docker-compose.yml -f docker/compose.local.yml -p cmesh-test up -d --build,
#      NATS published on a free 127.0.0.1 port
#   3. wait (bounded) for the three "cmesh node 0x… ready" log lines
#   4. with a temp CMESH_HOME: key new, login, name register through node1,
#      name resolve through node2: same target, owner = our address
#   5. a replicated context: kv deployed on node1 only, a context created there, node2
#      and node3 invited and joined (`cmesh ctx join`: they fetch the module and the
#      transactions), a write through each node, and every node converging on the same
#      root with every write readable everywhere
#   6. node4 (profile learners) started, admitted as a learner with `cmesh mesh admit`,
#      and resolving the name from step 4
#   7. down -v, always (trap)
#
# The client key is made before the mesh starts: the nodes take it as their admin
# (CMESH_ADMIN, which docker-compose.yml passes to every node), which ctx.join needs.
#
# Exit status 0 only if every step passed. CMESH_COMPOSE_KEEP=1 leaves the mesh running.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
cd "$CMESH_ROOT"

PROJECT="${CMESH_COMPOSE_PROJECT:-cmesh-test}"
READY_TIMEOUT="${CMESH_COMPOSE_READY_TIMEOUT:-120}"
FILES=(-f docker-compose.yml -f docker/compose.local.yml)

docker_ok || die "no Docker daemon answers (docker info failed)"
ensure_compose
docker_build_env

scripts/docker-base
[[ "${CMESH_SKIP_BUILD:-0}" == 1 ]] || build_release

CMESH_NATS_PORT="$(free_port)"
export CMESH_NATS_PORT
NATS_URL="nats://127.0.0.1:$CMESH_NATS_PORT"
CMESH_HOME="$(mktemp -d "${TMPDIR:-/tmp}/cmesh-compose-home.XXXXXX")"
export CMESH_HOME
unset CMESH_NATS_URL

dc() { compose "${FILES[@]}" -p "$PROJECT" "$@"; }

cleanup() {
  local rc=$?
  if [[ $rc != 0 ]]; then
    warn "compose test failed; the containers' last log lines:"
    dc logs --no-color --tail=40 2>&1 | sed 's/^/    /' >&2 || true
  fi
  if [[ "${CMESH_COMPOSE_KEEP:-0}" == 1 ]]; then
    warn "CMESH_COMPOSE_KEEP=1: left running (nats at $NATS_URL); stop with:"
    warn "  docker compose ${FILES[*]} -p $PROJECT --profile learners down -v"
  else
    dc --profile learners down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  rm -rf "$CMESH_HOME"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "client key"
"$CMESH_BIN" key new >/dev/null
ME="$("$CMESH_BIN" key show | first_address)"
[[ -n "$ME" ]] || die "cmesh key show printed no address"
ok "client $ME (the nodes' admin)"
CMESH_ADMIN="$ME"
export CMESH_ADMIN

log "compose up ($PROJECT, nats on 127.0.0.1:$CMESH_NATS_PORT)"
dc --profile learners down -v --remove-orphans >/dev/null 2>&1 || true
dc up -d --build

# A node's address from its "cmesh node 0x… ready" log line.
node_address() {
  dc logs --no-color "$1" 2>/dev/null | grep -oE 'cmesh node 0x[0-9a-fA-F]+ ready' | tail -n1 | awk '{print $3}'
}

log "waiting for the three nodes (at most ${READY_TIMEOUT}s)"
declare -A ADDR=()
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
  for n in node1 node2 node3; do
    [[ -n "${ADDR[$n]:-}" ]] || ADDR[$n]="$(node_address "$n")"
  done
  [[ -n "${ADDR[node1]}" && -n "${ADDR[node2]}" && -n "${ADDR[node3]}" ]] && break
  ((SECONDS < deadline)) || die "nodes not ready after ${READY_TIMEOUT}s (have: ${ADDR[*]:-none})"
  sleep 1
done
for n in node1 node2 node3; do ok "$n ${ADDR[$n]}"; done

cm() { "$CMESH_BIN" "$@" --nats "$NATS_URL"; }

# Retries a command while the mesh settles (registrar election, subscriptions).
retry() {
  local tries=$1 i out; shift
  for ((i = 1; i <= tries; i++)); do
    if out="$("$@" 2>&1)"; then printf '%s\n' "$out"; return 0; fi
    sleep 2
  done
  printf '%s\n' "$out" >&2
  return 1
}

NAME="compose$RANDOM$RANDOM.mcom"
TARGET="I:whoami"

log "login through node1, register $NAME -> $TARGET"
retry 15 cm login --node "${ADDR[node1]}" >/dev/null || die "login through node1 failed"
retry 15 cm name register "$NAME" "$TARGET" --node "${ADDR[node1]}" || die "name register through node1 failed"

log "login through node2, resolve $NAME"
retry 15 cm login --node "${ADDR[node2]}" >/dev/null || die "login through node2 failed"
# Raft commits before it answers, but node2 may still be catching up: retry until it knows.
RESOLVED="$(retry 15 cm name resolve "$NAME" --node "${ADDR[node2]}")" || die "name resolve through node2 failed"
printf '%s\n' "$RESOLVED" | sed 's/^/    /'

grep -qF -- "$TARGET" <<<"$RESOLVED" || die "node2 resolves $NAME without the target $TARGET"
grep -qiF -- "$ME" <<<"$RESOLVED" || die "node2 resolves $NAME without the owner $ME"
ok "node2 resolves $NAME to $TARGET, owner $ME"

log "replicated context: kv on node1, invite node2 and node3, join them"
retry 15 cm login --node "${ADDR[node3]}" >/dev/null || die "login through node3 failed"
cm app deploy apps/kv/kv.wasm --name kv --version 1.0.0 --node "${ADDR[node1]}" >/dev/null \
  || die "deploying kv on node1 failed"
CTX="$(cm ctx create kv --node "${ADDR[node1]}" | grep -oE '"context": *"0x[0-9a-f]{64}"' | grep -oE '0x[0-9a-f]{64}')"
[[ -n "$CTX" ]] || die "ctx create printed no context id"
ok "context $CTX"
for n in node2 node3; do
  cm ctx invite "$CTX" "${ADDR[$n]}" --node "${ADDR[node1]}" >/dev/null || die "inviting $n failed"
  cm ctx join "$CTX" --node "${ADDR[$n]}" --timeout 30 >/dev/null || die "$n did not join"
  ok "$n joined"
done

log "a write through each node"
for i in 1 2 3; do
  cm ctx call "$CTX" set "[\"from-node$i\", $i]" --node "${ADDR[node$i]}" >/dev/null || die "write through node$i failed"
done

# Genesis, two invitations, three writes.
root_of() { cm ctx root "$CTX" --node "${ADDR[$1]}" | tr -d ' \n'; }
deadline=$((SECONDS + 60))
while :; do
  r1="$(root_of node1)"; r2="$(root_of node2)"; r3="$(root_of node3)"
  [[ "$r1" == *'"applied":6'* && "$r1" == "$r2" && "$r2" == "$r3" ]] && break
  ((SECONDS < deadline)) || die "the nodes did not converge: node1 $r1, node2 $r2, node3 $r3"
  sleep 1
done
ok "same root, heads and 6 transactions on all three: $r1"
for n in node1 node2 node3; do
  for i in 1 2 3; do
    got="$(cm ctx view "$CTX" get "[\"from-node$i\"]" --node "${ADDR[$n]}" | tr -d ' \n')"
    [[ "$got" == *"\"result\":$i"* ]] || die "$n reads from-node$i as $got"
  done
done
ok "every write is readable on every node"

log "a fourth node (profile learners), admitted as a learner"
dc --profile learners up -d node4
deadline=$((SECONDS + READY_TIMEOUT))
until ADDR[node4]="$(node_address node4)"; [[ -n "${ADDR[node4]}" ]]; do
  ((SECONDS < deadline)) || die "node4 not ready after ${READY_TIMEOUT}s"
  sleep 1
done
ok "node4 ${ADDR[node4]}"
retry 15 cm mesh admit "${ADDR[node4]}" --role learner --node "${ADDR[node1]}" >/dev/null \
  || die "admitting node4 as a learner failed"
retry 15 cm login --node "${ADDR[node4]}" >/dev/null || die "login through node4 failed"
RESOLVED="$(retry 15 cm name resolve "$NAME" --node "${ADDR[node4]}")" || die "name resolve through node4 failed"
grep -qF -- "$TARGET" <<<"$RESOLVED" || die "the learner node4 resolves $NAME without the target $TARGET"
ok "the learner node4 resolves $NAME"

echo "compose: 3 passed, 0 failed"
