#!/usr/bin/env bash
# Copies ten pages of the SQLite documentation (limits, datatypes, WAL,
# VACUUM, AUTOINCREMENT, foreign keys, generated columns, WITHOUT ROWID,
# STRICT tables, JSON functions; HTML, from Debian's sqlite3-doc package)
# into DIR. The package is downloaded and unpacked, not installed. The
# questions in corpora/sqlite-docs/ were written against sqlite3-doc
# 3.40.1-2 (Debian 12).
#
#   bash scripts/sqlite_docs_corpus.sh DIR
set -euo pipefail
dest=${1:?usage: sqlite_docs_corpus.sh DIR}
docs=/usr/share/doc/sqlite3
pages="limits datatype3 wal lang_vacuum autoinc foreignkeys gencol withoutrowid stricttables json1"
if [ ! -f "$docs/limits.html" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download sqlite3-doc > /dev/null 2>&1) || {
        apt-get update -qq && (cd "$work" && apt-get download sqlite3-doc > /dev/null)
    }
    dpkg-deb -x "$work"/sqlite3-doc_*.deb "$work/root"
    docs="$work/root$docs"
fi
mkdir -p "$dest"
for page in $pages; do cp "$docs/$page.html" "$dest/"; done
echo "sqlite_docs_corpus: $(ls "$dest" | wc -l) pages in $dest"
