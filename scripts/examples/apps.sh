#!/usr/bin/env bash
# Apps and contexts with the nats CLI: deploy the greeter app (apps/greeter/greeter.wasm,
# built with the Rust SDK), create a context of it, call it as a transaction and as a
# view, pin the app version, and read the context's state root.
#
# JSON-RPC on cmesh.rpc, each with `Authorization: Bearer <token>`:
#   app.deploy {name, version, wasm: base64}   app.list
#   ctx.create {app, version?}   ctx.call|ctx.view {context, method, args?}   ctx.root {context}
# FQMNs on cmesh.fqmn: `SW:<context>:<method>:<args>` (a transaction), `S:` (a view),
# `A:<semver-req>:<context>:…` (only if the app's version matches). A context is its id or
# a unique hex prefix of it, of any length.
#
# Apps and contexts live on the node they were deployed and created on (contexts are
# replicated between member nodes in a later release), so these requests go to one node:
# cmesh.node.$NODE.rpc / .fqmn (NODE1 of .mesh/mesh.env, or $NODE).
. "$(dirname "$0")/_common.sh"
need_token
[[ -n "$NODE" ]] || { echo "set NODE to a node's address (apps and contexts live on one node)" >&2; exit 1; }
WASM="${WASM:-$(base64 -w0 "$REPO_ROOT/apps/greeter/greeter.wasm")}"

step "deploy the greeter app (version 4.1.3)"
# expect: 200
nats req cmesh.node.$NODE.rpc '{"jsonrpc":"2.0","id":1,"method":"app.deploy","params":{"name":"greeter","version":"4.1.3","wasm":"'"$WASM"'"}}' -H "Authorization:Bearer $TOKEN"

step "create a context of it: you are its admin"
CONTEXT="${CONTEXT:-$(nats req cmesh.node.$NODE.rpc '{"jsonrpc":"2.0","id":2,"method":"ctx.create","params":{"app":"greeter"}}' -H "Authorization:Bearer $TOKEN" --raw | jq -r .result.context)}"
echo "context: $CONTEXT" >&2

step "a transaction: greets Dexter and counts the greeting"
# expect: 200
nats req cmesh.node.$NODE.fqmn 'SW:'"$CONTEXT"':hello_world:["Dexter"]' -H "Authorization:Bearer $TOKEN"

step "a view: how many times Dexter was greeted"
# expect: 200
nats req cmesh.node.$NODE.fqmn 'S:'"$CONTEXT"':greetings:["Dexter"]' -H "Authorization:Bearer $TOKEN"

step "the seed spelling, pinned to app versions ~4.1.3"
# expect: 200
nats req cmesh.node.$NODE.fqmn '0Ax:~4.1.3:'"$CONTEXT"':hello_world:["Dexter"]' -H "Authorization:Bearer $TOKEN"

step "pinned to a version the context does not run: 409"
# expect: 409
nats req cmesh.node.$NODE.fqmn 'A:^5:'"$CONTEXT"':hello_world:["Dexter"]' -H "Authorization:Bearer $TOKEN"

step "the context's state root, heads and applied transactions"
# expect: 200
nats req cmesh.node.$NODE.rpc '{"jsonrpc":"2.0","id":3,"method":"ctx.root","params":{"context":"'"$CONTEXT"'"}}' -H "Authorization:Bearer $TOKEN"
