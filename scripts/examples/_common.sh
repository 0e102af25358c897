# shellcheck shell=bash
# Sourced by the example scripts: where NATS is, how to sign, and a token.
#
# NATS_URL (read by the nats CLI) comes from, in order: $NATS_URL, $CMESH_NATS_URL,
# .mesh/mesh.env (written by `cmesh mesh up`, e.g. through scripts/up), nats://127.0.0.1:4222.
# NODE (a node's address, for the per-node subjects cmesh.node.<address>.*) comes from
# $NODE or NODE1 in .mesh/mesh.env.
set -euo pipefail

EXAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$EXAMPLES_DIR/../.." && pwd)"

if [[ -f "$REPO_ROOT/.mesh/mesh.env" ]]; then
  # shellcheck disable=SC1091
  . "$REPO_ROOT/.mesh/mesh.env"
fi
export NATS_URL="${NATS_URL:-${CMESH_NATS_URL:-nats://127.0.0.1:4222}}"
NODE="${NODE:-${NODE1:-}}"

for tool in nats jq; do
  command -v "$tool" >/dev/null || { echo "the example needs '$tool' on the PATH" >&2; exit 1; }
done

# Python with eth-account (the venv scripts/test makes, else the system's python3).
PY="${PY:-python3}"
[[ -x "$REPO_ROOT/target/py/bin/python" ]] && PY="$REPO_ROOT/target/py/bin/python"

step() { printf '\n# %s\n' "$*" >&2; }

# Reads a message on stdin and prints its EIP-191 personal_sign signature (0x + 65 bytes
# r|s|v) with PRIVATE_KEY: what MetaMask, ethers' signMessage or web3's personal_sign make.
sign() {
  "$PY" -c 'import sys
from eth_account import Account
from eth_account.messages import encode_defunct
msg = sys.stdin.buffer.read()
print("0x" + bytes(Account.sign_message(encode_defunct(primitive=msg), private_key=sys.argv[1]).signature).hex())' "$PRIVATE_KEY"
}

# A token for the other examples: TOKEN from the environment, else log in now.
need_token() {
  if [[ -z "${TOKEN:-}" ]]; then
    eval "$("$EXAMPLES_DIR/login.sh")"
  fi
}
