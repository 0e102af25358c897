#!/usr/bin/env bash
# Passwordless login with the nats CLI: prove you hold a key by signing a challenge.
#
# Subject cmesh.rpc takes JSON-RPC 2.0 (any node answers; cmesh.node.<address>.rpc asks one).
# A challenge's session is kept by the node that made it, so when NODE is known (from
# .mesh/mesh.env) both steps go to that node: with several nodes, cmesh.rpc could hand the
# login to another node than the challenge, which answers 401 "unknown session".
#
#   1. iam.challenge {address}           -> {"result": {session, message, expires_at}}
#   2. sign `message` with EIP-191 personal_sign (eth_account here; any Ethereum wallet works)
#   3. iam.login {session, signature}    -> {"result": {token, address, expires_at}}
#
# The token (a JWT) then goes into the header `Authorization: Bearer <token>` of every
# other request. Replies carry the headers `Cmtp-Version: CMTP/0` and `Cmtp-Status: 200`.
#
# Key: PRIVATE_KEY (0x-hex secp256k1); a fresh one is made when it is unset.
# Prints shell assignments on stdout, so that other scripts can do:
#   eval "$(scripts/examples/login.sh)"      # sets PRIVATE_KEY, ADDRESS, TOKEN
# Needs: nats, jq, python3 with eth-account (scripts/test makes target/py with it).
. "$(dirname "$0")/_common.sh"

if [[ -z "${PRIVATE_KEY:-}" ]]; then
  PRIVATE_KEY="$("$PY" -c 'from eth_account import Account; print("0x" + bytes(Account.create().key).hex())')"
fi
ADDRESS="$("$PY" -c 'import sys; from eth_account import Account; print(Account.from_key(sys.argv[1]).address.lower())' "$PRIVATE_KEY")"

RPC="cmesh.rpc"
[[ -n "$NODE" ]] && RPC="cmesh.node.$NODE.rpc"

step "1. ask for a challenge for $ADDRESS (on $RPC)"
# expect: 200
CHALLENGE=$(nats req "$RPC" '{"jsonrpc":"2.0","id":1,"method":"iam.challenge","params":{"address":"'"$ADDRESS"'"}}' --raw)
echo "$CHALLENGE" >&2
SESSION=$(jq -r '.result.session' <<<"$CHALLENGE")

step "2. sign the challenge's message (EIP-191 personal_sign)"
SIGNATURE=$(jq -j '.result.message' <<<"$CHALLENGE" | sign)
echo "$SIGNATURE" >&2

step "3. log in with the session and the signature"
# expect: 200
LOGIN=$(nats req "$RPC" '{"jsonrpc":"2.0","id":2,"method":"iam.login","params":{"session":"'"$SESSION"'","signature":"'"$SIGNATURE"'"}}' --raw)
echo "$LOGIN" >&2
TOKEN=$(jq -r '.result.token // empty' <<<"$LOGIN")
[[ -n "$TOKEN" ]] || { echo "login failed" >&2; exit 1; }

printf 'PRIVATE_KEY=%s\nADDRESS=%s\nTOKEN=%s\n' "$PRIVATE_KEY" "$ADDRESS" "$TOKEN"
