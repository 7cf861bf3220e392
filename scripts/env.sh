# Shared by the scripts: how fogbank is built on Debian 12.
#
# RocksDB: debug builds (the test suite) link Debian's librocksdb-dev 7.8.3
# instead of compiling the bundled copy (~11 min of C++ on 2 cores). The
# rocksdb crate is pinned to 0.20.1, the newest that links against 7.8.3;
# see ARCHITECTURE.md. Release builds (scripts/fogbank, scripts/run,
# scripts/bench) call fogbank_release_rocksdb first.

multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
export ROCKSDB_LIB_DIR=${ROCKSDB_LIB_DIR:-/usr/lib/$multiarch}
export ROCKSDB_INCLUDE_DIR=${ROCKSDB_INCLUDE_DIR:-/usr/include}
# Keep build output outside the clone so repeated runs are incremental.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fogbank-target}

# Installs the Debian packages the build needs, if any is missing.
fogbank_install_build_deps() {
    local missing=() pkg
    for pkg in "$@" librocksdb-dev libclang-dev clang pkg-config make; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "== installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# A release build compiles the bundled RocksDB, with NDEBUG: Debian builds
# its library with assertions and test sync points compiled in, and a
# gateway linked to it ingests ~40 % less. FOGBANK_ROCKSDB=system keeps
# Debian's library (a cold release build in ~7 min instead of ~16).
fogbank_release_rocksdb() {
    if [ "${FOGBANK_ROCKSDB:-bundled}" = system ]; then
        fogbank_install_build_deps
    else
        unset ROCKSDB_LIB_DIR ROCKSDB_INCLUDE_DIR
        fogbank_install_build_deps g++
    fi
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

# Where built example services (WebAssembly components) go.
export FOGBANK_GUESTS_DIR=${FOGBANK_GUESTS_DIR:-$HOME/.cache/fogbank-guests}
# Tools installed from crates.io for building guests, and the guests'
# own build output.
FOGBANK_TOOLS=${FOGBANK_TOOLS:-$HOME/.cache/fogbank-tools}
export FOGBANK_GUESTS_TARGET=${FOGBANK_GUESTS_TARGET:-$HOME/.cache/fogbank-guests-target}

# What building guests needs: Debian's Rust with its standard-library
# sources (rustup's toolchain has no wasm32 target and cannot fetch one),
# WASI libc, clang 19 for C, and from crates.io the component linker and
# the C bindings generator. Pinned: a guest built today must build again.
fogbank_install_guest_toolchain() {
    fogbank_install_build_deps rustc-web cargo-web rust-web-src lld wasi-libc clang-19 lld-19 libclang-rt-19-dev-wasm32
    local tool version
    for tool in wasm-component-ld@0.5.31 wit-bindgen-cli@0.57.1; do
        version=${tool##*@}
        case $tool in
            wit-bindgen-cli*) "$FOGBANK_TOOLS/bin/wit-bindgen" --version 2>/dev/null | grep -qx "wit-bindgen-cli $version" && continue ;;
            *) "$FOGBANK_TOOLS/bin/${tool%@*}" --version 2>/dev/null | grep -qx "${tool%@*} $version" && continue ;;
        esac
        echo "== installing $tool"
        cargo install --quiet --locked --root "$FOGBANK_TOOLS" "$tool"
    done
}

# Cross-compiling for arm64 (a Raspberry Pi class gateway) with Debian's
# aarch64-linux-gnu toolchain: sets the linker and C/C++ compilers for the
# target, and FOGBANK_RUN_TARGET, a qemu-user prefix that runs the built
# binary here. The target's libc (and, with FOGBANK_ROCKSDB=system, its
# RocksDB dependencies) come from Debian's arm64 packages: libc through
# multiarch (dpkg --add-architecture arm64), and RocksDB unpacked into
# ~/.cache/fogbank-arm64-sysroot, since Debian's librocksdb-dev cannot be
# installed for two architectures at once.
fogbank_cross_arm64() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $sudo dpkg --add-architecture arm64
        $sudo apt-get update -qq
    fi
    local rocksdb_deps=()
    [ "${FOGBANK_ROCKSDB:-bundled}" = system ] &&
        rocksdb_deps=(libsnappy1v5:arm64 liblz4-1:arm64 libzstd1:arm64 libbz2-1.0:arm64 zlib1g:arm64)
    fogbank_install_build_deps gcc-aarch64-linux-gnu g++-aarch64-linux-gnu binutils-aarch64-linux-gnu \
        qemu-user-static libc6:arm64 libgcc-s1:arm64 libstdc++6:arm64 "${rocksdb_deps[@]}"
    rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu ||
        rustup target add aarch64-unknown-linux-gnu
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
    export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
    # jemalloc fixes its page size when built; 64 KiB pages work on ARM
    # kernels of 4, 16 (Raspberry Pi 5) and 64 KiB pages alike.
    export JEMALLOC_SYS_WITH_LG_PAGE=16
    FOGBANK_RUN_TARGET="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
    if [ "${FOGBANK_ROCKSDB:-bundled}" = system ]; then
        local sysroot=$HOME/.cache/fogbank-arm64-sysroot
        if [ ! -e "$sysroot/usr/lib/aarch64-linux-gnu/librocksdb.so" ]; then
            local debs
            debs=$(mktemp -d)
            (cd "$debs" && apt-get download librocksdb7.8:arm64 librocksdb-dev:arm64 libgflags2.2:arm64 2>/dev/null)
            for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
            dpkg-deb -e "$debs"/librocksdb7.8_*.deb "$sysroot/DEBIAN"
            rm -rf "$debs"
        fi
        export ROCKSDB_LIB_DIR=$sysroot/usr/lib/aarch64-linux-gnu ROCKSDB_INCLUDE_DIR=/usr/include
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,-rpath-link,$ROCKSDB_LIB_DIR"
        FOGBANK_RUN_TARGET+=" -E LD_LIBRARY_PATH=$ROCKSDB_LIB_DIR"
        # For dpkg-shlibdeps: the package that provides librocksdb.so.7.8.
        FOGBANK_SHLIBS_LOCAL=$sysroot/DEBIAN/shlibs
    fi
}
