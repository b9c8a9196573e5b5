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
