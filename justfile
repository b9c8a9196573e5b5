# rnats task runner (https://github.com/casey/just). Each recipe is a plain
# command you can also run by hand.

# Run the server with embedded defaults on port 4222
run *ARGS:
    cargo run --release --bin rnats-server -- {{ARGS}}

# Run all tests (the same command CI runs)
test:
    cargo test

# Formatting and lints as CI checks them
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Side-by-side benchmark against nats-server (needs nats-server on PATH)
bench-compare *ARGS:
    cargo build --release --bins
    python3 scripts/bench_compare.py {{ARGS}}

# Fuzz the protocol parser (needs nightly and cargo-fuzz)
fuzz:
    cd fuzz && cargo +nightly fuzz run parser

# Fuzz the route (server-to-server) protocol parser (needs nightly and cargo-fuzz)
fuzz-route:
    cd fuzz && cargo +nightly fuzz run route_parser

# Fuzz the configuration parser, Options::apply and validate (needs nightly and cargo-fuzz)
fuzz-config:
    cd fuzz && cargo +nightly fuzz run config

# Everything CI does
ci:
    bash .ci/run

# Start a local three-node cluster (scripts/cluster up: -n N, --tls, --bin PATH)
cluster-up *ARGS:
    cargo build --release --bins
    python3 scripts/cluster up {{ARGS}}

# Stop the local cluster
cluster-down:
    python3 scripts/cluster down

# Pid, state and routes of every node of the local cluster
cluster-status:
    python3 scripts/cluster status

# Faults under load on a three-node cluster (scripts/chaos: --quick, --bin PATH)
chaos *ARGS:
    cargo build --release --bins
    python3 scripts/chaos {{ARGS}}

# Build the FROM-scratch container image rnats:dev from target/release
docker-image *ARGS:
    cargo build --release --bins
    python3 scripts/docker-image {{ARGS}}

# Three-node cluster in containers (needs the image: just docker-image)
docker-cluster-up:
    docker-compose -f cluster-configs/docker/compose.yaml up -d

docker-cluster-down:
    docker-compose -f cluster-configs/docker/compose.yaml down
