# cmesh node image, for machines that can pull from a container registry:
#   docker build -t cmesh .            (or: docker compose up --build)
# Without a registry use docker/compose.local.yml (see docs/SETUP.md), which builds on the
# local cmesh-base:bookworm image instead (scripts/docker-base).
ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cmesh \
 && cp target/release/cmesh /usr/local/bin/cmesh

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/cmesh /usr/local/bin/cmesh
VOLUME /data
ENV CMESH_DATA=/data
ENTRYPOINT ["cmesh"]
CMD ["node", "run"]
