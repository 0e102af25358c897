#!/usr/bin/env bash
# Calling functions by FQMN with the nats CLI.
#
# Subject cmesh.fqmn takes the FQMN string itself as the payload, e.g. `I:whoami`
# (I = IAM, R = registrar, E = events, P = router; a trailing W marks a write).
# cmesh.node.<address>.fqmn asks one node instead of any.
# Every request but a ping needs `Authorization: Bearer <token>` (see login.sh).
# Replies carry `Cmtp-Version: CMTP/0` and `Cmtp-Status: <code>` (HTTP-like codes);
# `nats req` without --raw prints them above the body.
. "$(dirname "$0")/_common.sh"
need_token

step "the router answers a ping"
# expect: 200
nats req cmesh.fqmn 'P:ping'

step "who am I? (authenticated)"
# expect: 200
nats req cmesh.fqmn 'I:whoami' -H "Authorization:Bearer $TOKEN"

step "the same without a token is refused: Cmtp-Status 401"
# expect: 401
nats req cmesh.fqmn 'I:whoami' || true

if [[ -n "$NODE" ]]; then
  step "one node in particular: $NODE"
  # expect: 200
  nats req "cmesh.node.$NODE.fqmn" 'I:whoami' -H "Authorization:Bearer $TOKEN"
fi
