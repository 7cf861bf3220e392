# Shared by the scripts: how fogbank is built on Debian 12.
#
# RocksDB: link Debian's librocksdb-dev (7.8.3) instead of compiling the
# bundled copy (~11 min of C++ on 2 cores). The rocksdb crate is pinned to
# 0.20.1, the newest that links against 7.8.3; see ARCHITECTURE.md.

multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
export ROCKSDB_LIB_DIR=${ROCKSDB_LIB_DIR:-/usr/lib/$multiarch}
export ROCKSDB_INCLUDE_DIR=${ROCKSDB_INCLUDE_DIR:-/usr/include}
# Keep build output outside the clone so repeated runs are incremental.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fogbank-target}

# Installs the Debian packages the build needs, if any is missing.
fogbank_install_build_deps() {
    local missing=() pkg
    for pkg in "$@" librocksdb-dev libclang-dev clang pkg-config; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "== installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# The test peers written in Python (schemathesis, aiocoap) live in one
# virtualenv (Debian's Python refuses system-wide pip installs). Installs
# each `package==version` argument that is missing; sets FOGBANK_PYTHON.
fogbank_venv() {
    local venv=${FOGBANK_VENV:-$HOME/.cache/fogbank-venv} requirement
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" 2>/dev/null || { fogbank_install_build_deps python3-venv; python3 -m venv "$venv"; }
    fi
    for requirement in "$@"; do
        "$venv/bin/python" -m pip show "${requirement%%==*}" 2>/dev/null | grep -q "^Version: ${requirement##*==}\$" \
            || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$requirement"
    done
    export FOGBANK_PYTHON=$venv/bin/python
}
