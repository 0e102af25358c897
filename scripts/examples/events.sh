#!/usr/bin/env bash
# Events with the nats CLI.
#
# Nodes publish what happens on cmesh.events.<service>.<kind> (e.g. a registration,
# a login); anyone connected may `nats sub 'cmesh.events.>'` (or: cmesh events tail).
# Applications publish with the FQMN `EW:<topic>:<json>` and read the recent events of a
# topic with `E:<topic>`, both on cmesh.fqmn with `Authorization: Bearer <token>`.
. "$(dirname "$0")/_common.sh"
need_token
TOPIC="${TOPIC:-demo}"

step "listen to every event (5 at most, 10 s at most) in the background"
timeout 10 nats sub 'cmesh.events.>' --count=5 &
SUB=$!
sleep 0.5

step "publish an event on topic $TOPIC"
# expect: 200
nats req cmesh.fqmn 'EW:'"$TOPIC"':{"hello":"world"}' -H "Authorization:Bearer $TOKEN"

step "read the recent events of $TOPIC"
# expect: 200
nats req cmesh.fqmn 'E:'"$TOPIC" -H "Authorization:Bearer $TOKEN"

wait "$SUB" || true
