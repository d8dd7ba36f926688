#!/usr/bin/env bash
# Fetch the third-party data of the real-data tests (tests/data/test_real_data.py) into
# $CODETR_TESTDATA (default <repo>/.cache/testdata, ignored by git). Nothing of it is in the
# repository; it comes from the packages the registries carry:
#
#   labelme/data_dataset_coco/   Debian's `labelme-examples` (labelme's own COCO export of 3 VOC
#                                images: image and annotation ids from 0, a `_background_`
#                                category with id 0). GPL-3, read by the tests only.
#   deepforest/                  annotated aerial tree images shipped in the `deepforest` wheel on
#                                PyPI (csv and Pascal-VOC xml boxes; up to 279 trees per image).
#                                MIT. Only the data files are unpacked; nothing is installed.
#
# Usage: bash tools/fetch_test_data.sh [python]   (python with pip; default: .venv/bin/python)
# Idempotent (a complete source is kept) and never fails: a source that cannot be fetched (no
# network, not a Debian system; each download gives up after 5 min) is reported here, and the
# tests that need it skip saying so. As root, the apt lists are refreshed when the package is
# not found in them.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${CODETR_TESTDATA:-$ROOT/.cache/testdata}"
PY="${1:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
DEEPFOREST_VERSION=2.1.0
DEEPFOREST_FILES=(OSBS_029.png OSBS_029.csv SOAP_061.png testfile_multi.csv
                  2019_YELL_2_541000_4977000_image_crop.png 2019_YELL_2_541000_4977000_image_crop.xml)
mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

fetch_labelme() {
    local out="$DEST/labelme" sub="usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco"
    [[ -f "$out/.complete" ]] && return 0
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        echo "[testdata] labelme-examples: skipped (needs apt-get and dpkg-deb: a Debian/Ubuntu system)"
        return 0
    fi
    ( cd "$TMP" && timeout 300 apt-get download -q labelme-examples >/dev/null 2>&1 ) \
        || { [[ "$(id -u)" == 0 ]] && timeout 300 apt-get update -qq >/dev/null 2>&1 \
             && ( cd "$TMP" && timeout 300 apt-get download -q labelme-examples >/dev/null 2>&1 ); }
    local deb
    deb="$(ls "$TMP"/labelme-examples_*.deb 2>/dev/null | head -n1)"
    if [[ -z "$deb" ]]; then
        echo "[testdata] labelme-examples: not available from apt (no network or not in the sources)"
        return 0
    fi
    dpkg-deb -x "$deb" "$TMP/deb" && [[ -f "$TMP/deb/$sub/annotations.json" ]] || {
        echo "[testdata] labelme-examples: $(basename "$deb") has no $sub/annotations.json"; return 0; }
    rm -rf "$out" && mkdir -p "$out"
    cp -r "$TMP/deb/$sub" "$out/data_dataset_coco"
    basename "$deb" > "$out/SOURCE"
    touch "$out/.complete"
    echo "[testdata] labelme-examples: $(basename "$deb") -> $out"
}

fetch_deepforest() {
    local out="$DEST/deepforest"
    [[ -f "$out/.complete" ]] && return 0
    if ! timeout 300 "$PY" -m pip download -q --no-deps --only-binary :all: "deepforest==$DEEPFOREST_VERSION" -d "$TMP/whl" >/dev/null 2>&1; then
        echo "[testdata] deepforest==$DEEPFOREST_VERSION: pip download failed (no network or no pip in $PY)"
        return 0
    fi
    rm -rf "$out" && mkdir -p "$out"
    "$PY" - "$TMP/whl" "$out" "${DEEPFOREST_FILES[@]}" <<'PYEOF' || { echo "[testdata] deepforest: unpacking failed"; rm -rf "$out"; return 0; }
import glob, os, sys, zipfile
whl_dir, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
(whl,) = glob.glob(os.path.join(whl_dir, "deepforest-*.whl"))
with zipfile.ZipFile(whl) as z:
    for name in names:
        with open(os.path.join(out, name), "wb") as f:
            f.write(z.read(f"deepforest/data/{name}"))
    licence = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    if licence:
        with open(os.path.join(out, "LICENSE"), "wb") as f:
            f.write(z.read(licence[0]))
with open(os.path.join(out, "SOURCE"), "w") as f:
    f.write(os.path.basename(whl) + "\n")
PYEOF
    touch "$out/.complete"
    echo "[testdata] deepforest==$DEEPFOREST_VERSION -> $out"
}

fetch_labelme
fetch_deepforest
exit 0
