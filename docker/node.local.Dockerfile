# The node image without a registry: the local base image (scripts/docker-base) plus the
# binary built on the host by `cargo build --release` (Debian 12 on both sides).
# Used by docker/compose.local.yml; the build context is the repository root (compose
# resolves paths from the first file's directory, the root, even in this override).
FROM cmesh-base:bookworm
COPY target/release/cmesh /usr/local/bin/cmesh
VOLUME /data
ENV CMESH_DATA=/data
ENTRYPOINT ["cmesh"]
CMD ["node", "run"]
