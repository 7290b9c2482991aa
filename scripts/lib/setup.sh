# Shared setup for the scripts: install what is missing on Debian/Ubuntu. Sourced, not run.

# Runs a command as root (directly when already root, else through sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
# ensure_apt PKG...: installs the Debian packages that are not installed yet.
ensure_apt() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing ${missing[*]}"
    if [ "$APT_UPDATED" -eq 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_rust: a Rust toolchain recent enough for the workspace (rustup's stable).
ensure_rust() {
    ensure_apt build-essential pkg-config ca-certificates curl
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "==> installing Rust with rustup"
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
            export PATH="$HOME/.cargo/bin:$PATH"
        fi
    fi
}

# ensure_node: Node.js 20 or newer with npm (the UI's build tools need it).
ensure_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        ensure_apt nodejs npm
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    if [ "$major" -lt 20 ]; then
        echo "Node.js $(node --version) is too old for the UI build (needs 20 or newer)." >&2
        echo "Install a current Node.js (for example from your distribution's backports) and run again." >&2
        exit 1
    fi
}

# ensure_kosoku: the Autobahn WebSocket conformance cases for Python 3 (tests/tests/conformance.rs
# runs them against the server's echo endpoint).
KOSOKU_VERSION=0.1.0
ensure_kosoku() {
    if ! python3 -m pip --version >/dev/null 2>&1; then ensure_apt python3 python3-pip; fi
    if ! command -v kosoku >/dev/null 2>&1 \
        || [ "$(python3 -m pip show kosoku 2>/dev/null | sed -n 's/^Version: //p')" != "$KOSOKU_VERSION" ]; then
        echo "==> installing kosoku $KOSOKU_VERSION"
        python3 -m pip install --quiet "kosoku==$KOSOKU_VERSION" \
            || python3 -m pip install --quiet --break-system-packages "kosoku==$KOSOKU_VERSION"
    fi
}

# The system libraries the Tauri desktop app builds and runs with, and what its end-to-end
# tests drive it with (a virtual display and WebKit's WebDriver); fiu-utils injects disk faults
# (fiu-run, fiu-ctrl) for tests/tests/disk_faults.rs; nftables and iproute2 make the network
# namespace with packet loss and partitions for tests/tests/network_faults.rs.
DESKTOP_PACKAGES=(libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev libssl-dev
    libsoup-3.0-dev libjavascriptcoregtk-4.1-dev libxdo-dev)
E2E_PACKAGES=(xvfb webkit2gtk-driver imagemagick fiu-utils nftables iproute2)
# PostgreSQL, Redis and nginx for the cluster tests: each test runs its own servers (initdb,
# loopback ports) from these packages' binaries; the packages' own services are not used.
CLUSTER_PACKAGES=(postgresql redis-server nginx)

# build_ui: installs the UI's packages and bundles it into ui/dist (the app embeds it).
build_ui() {
    (cd ui && { [ -d node_modules ] && [ node_modules -nt package-lock.json ] || npm ci --no-audit --no-fund; } && npm run build)
}
