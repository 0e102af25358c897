#!/usr/bin/env bash
# shellcheck disable=SC2016  # $SRV in the subjects below is not a shell variable
# Every node is an instance of the NATS micro service `cmesh` (ADR-32), so the standard
# tooling sees the mesh: list instances, their endpoints, and request statistics.
# These need no token. Under the hood they are requests on $SRV.<VERB>.cmesh, answered by
# every node (nats req takes the first reply; --replies=0 waits for all).
. "$(dirname "$0")/_common.sh"

step "instances of the service cmesh"
nats micro ls cmesh

step "endpoints and metadata"
nats micro info cmesh

step "request counts, errors, processing time"
nats micro stats cmesh

step "the raw protocol: ping, info, stats"
nats req '$SRV.PING.cmesh' ''
nats req '$SRV.INFO.cmesh' ''
nats req '$SRV.STATS.cmesh' ''
