#!/usr/bin/env bash
# Names with the nats CLI: the registrar maps a name (like helloWorldExample.mcom) to a
# target FQMN; the owner is the address that logged in.
#
# JSON-RPC on cmesh.rpc, each with `Authorization: Bearer <token>`:
#   registrar.register {name, target}   registrar.resolve {name}   -> {name, target, owner, ...}
#   registrar.transfer {name, to}       registrar.release {name}   registrar.list {owner?}
# The same as FQMNs on cmesh.fqmn: `R:<name>[:<args>]` calls the name's target,
# `RW:register:{"name":…,"target":…}` registers.
#
# NAME and TARGET may be given; NAME defaults to a fresh demo<random>.mcom.
. "$(dirname "$0")/_common.sh"
need_token
NAME="${NAME:-demo$RANDOM$RANDOM.mcom}"
NAME2="${NAME2:-fqmn$RANDOM$RANDOM.mcom}"
TARGET="${TARGET:-I:whoami}"

step "register $NAME -> $TARGET"
# expect: 200
nats req cmesh.rpc '{"jsonrpc":"2.0","id":1,"method":"registrar.register","params":{"name":"'"$NAME"'","target":"'"$TARGET"'"}}' -H "Authorization:Bearer $TOKEN"

step "resolve it: target and owner"
# expect: 200
nats req cmesh.rpc '{"jsonrpc":"2.0","id":2,"method":"registrar.resolve","params":{"name":"'"$NAME"'"}}' -H "Authorization:Bearer $TOKEN"

step "call the name: the router resolves it and calls $TARGET"
# expect: 200
nats req cmesh.fqmn "R:$NAME" -H "Authorization:Bearer $TOKEN"

step "list the names I own"
# expect: 200
nats req cmesh.rpc '{"jsonrpc":"2.0","id":3,"method":"registrar.list","params":{"owner":"'"$ADDRESS"'"}}' -H "Authorization:Bearer $TOKEN"

step "register $NAME2 with the FQMN form, then release it"
# expect: 200
nats req cmesh.fqmn 'RW:register:{"name":"'"$NAME2"'","target":"I:whoami"}' -H "Authorization:Bearer $TOKEN"
# expect: 200
nats req cmesh.rpc '{"jsonrpc":"2.0","id":4,"method":"registrar.release","params":{"name":"'"$NAME2"'"}}' -H "Authorization:Bearer $TOKEN"
