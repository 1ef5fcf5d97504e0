#!/usr/bin/env bash
# Copies the chapters and appendices of "The Rust Programming Language"
# (HTML, from Debian's rust-doc package) into DIR. The package is
# downloaded and unpacked, not installed. The questions in
# corpora/rust-book/ were written against rust-doc 1.63.0+dfsg1-2
# (Debian 12).
#
#   bash scripts/rust_book_corpus.sh DIR
set -euo pipefail
dest=${1:?usage: rust_book_corpus.sh DIR}
. "$(dirname "$0")/debian_doc.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
book=$(debian_doc rust-doc /usr/share/doc/rust-doc/html/book/index.html "$work")
mkdir -p "$dest"
cp "$book"/ch*.html "$book"/appendix-0*.html "$dest/"
echo "rust_book_corpus: $(ls "$dest" | wc -l) pages in $dest"
