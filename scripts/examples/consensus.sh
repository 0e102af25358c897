#!/usr/bin/env bash
# The mesh registry's Raft with the nats CLI: who leads, how far the log is, who is
# admitted, and admitting a node (mesh admins only).
#
#   C:status   leader, term, last log, commit and applied index, voters, learners, and the
#              answering node's role (voter, learner, member; null if not admitted)
#   C:nodes    the admitted nodes and their roles
#   CW:<op>:<json>  a registry command: admit {node, role}, remove {node} (mesh admins
#              only); register, transfer, release {name, …}
#
# NEW_NODE (an address) may be given for the admission; it defaults to a made-up one.
. "$(dirname "$0")/_common.sh"
need_token
NEW_NODE="${NEW_NODE:-0x00000000000000000000000000000000000000aa}"

step "Raft as the answering node sees it"
# expect: 200
nats req cmesh.fqmn 'C:status' -H "Authorization:Bearer $TOKEN"

step "the admitted nodes"
# expect: 200
nats req cmesh.fqmn 'C:nodes' -H "Authorization:Bearer $TOKEN"

step "admit $NEW_NODE as a learner (403 unless you are a mesh admin of the genesis)"
# expect: 403
nats req cmesh.fqmn 'CW:admit:{"node":"'"$NEW_NODE"'","role":"learner"}' -H "Authorization:Bearer $TOKEN" || true
