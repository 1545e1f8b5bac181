# bffgate container image: build with the Rust toolchain, run on a slim Debian as a non-root
# user. `docker compose up` builds it; `docker build -t bffgate .` works on its own too.

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/bffgate-demo-api.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs src/bin/bffgate-demo-api.rs \
 && cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin bffgate \
 && mkdir /keys && chown bffgate /keys && chmod 0700 /keys
COPY --from=build /src/target/release/bffgate /src/target/release/bffgate-demo-api /usr/local/bin/
COPY static /usr/share/bffgate/static
COPY deploy/bffgate.toml /etc/bffgate/bffgate.toml
ENV BFFGATE_CONFIG=/etc/bffgate/bffgate.toml
USER bffgate
EXPOSE 8080
ENTRYPOINT ["bffgate"]
CMD ["serve"]
