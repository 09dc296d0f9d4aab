#!/usr/bin/env bash
# Fetches Debian's source of cpp-httplib (the same release libcpp-httplib-dev
# installs: 0.11.4+ds-1+deb12u1, with Debian's security patch applied), for
# the builds that cannot link Debian's shared libcpp-httplib: the KEEL_STATIC
# builds carried to the GPU machine (`cmake --preset device`). Upstream
# cpp-httplib is one header-only httplib.h; Debian's -dev package ships it
# split into declarations and a shared library, so a static keel takes the
# whole header from the source package instead. Nothing is fetched at build
# time: this script puts it into a cache outside the repo, where CMake finds
# it (KEEL_HTTPLIB_DIR, default ${XDG_CACHE_HOME:-~/.cache}/keel/cpp-httplib-0.11.4).
# Needs apt-get and dpkg-source (Debian); root is not needed (a private apt
# state under the cache; the system's sources are left alone).
# Usage: scripts/fetch_httplib.sh   (exit 0 when the header is present or was fetched)
set -euo pipefail
ver="0.11.4+ds-1+deb12u1"
cache="${KEEL_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keel}"
dest="$cache/cpp-httplib-0.11.4"
# sha256 of the Debian source package's files (bookworm, 2023-07)
declare -A sums=(
  ["cpp-httplib_${ver}.dsc"]=a4dde747bbde7cc9fa62cdf50d61140a0eaefb7f1383497ef2d48daf3bf5f9ec
  ["cpp-httplib_0.11.4+ds.orig.tar.xz"]=8b1a5df569003b6a4f24c68489bbda5c64aec94697bdc9ebba5d79408b2ae7eb
  ["cpp-httplib_${ver}.debian.tar.xz"]=a0adf8a38610806f6d94ba69839438635e5e6580775e28ff31d6a081e34f1484
)
if [ -f "$dest/httplib.h" ]; then
  echo "keel fetch: $dest/httplib.h is present"
  exit 0
fi
for tool in apt-get dpkg-source; do
  command -v "$tool" >/dev/null || { echo "keel fetch: $tool is needed (Debian) to fetch cpp-httplib's source" >&2; exit 1; }
done
work="$cache/cpp-httplib-src"
rm -rf "$work" && mkdir -p "$work/lists/partial" "$work/dl" "$work/sources.d" "$work/cache/archives/partial"
cat > "$work/sources.d/debian-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/sources.d"
          -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root -qq)
echo "keel fetch: Debian's source of cpp-httplib $ver into $dest" >&2
apt-get "${apt_opts[@]}" update
(cd "$work/dl" && apt-get "${apt_opts[@]}" source --download-only "cpp-httplib=$ver")
for f in "${!sums[@]}"; do
  echo "${sums[$f]}  $work/dl/$f" | sha256sum --check --quiet ||
    { echo "keel fetch: $f does not have the pinned sha256" >&2; exit 1; }
done
dpkg-source --no-check -x "$work/dl/cpp-httplib_${ver}.dsc" "$work/src" >/dev/null
mkdir -p "$dest"
cp "$work/src/httplib.h" "$work/src/LICENSE" "$dest/"
rm -rf "$work"
echo "keel fetch: $dest/httplib.h ($(grep -m1 -o 'CPPHTTPLIB_VERSION "[^"]*"' "$dest/httplib.h"))"
