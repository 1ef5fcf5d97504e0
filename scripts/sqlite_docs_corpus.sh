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
. "$(dirname "$0")/debian_doc.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
docs=$(debian_doc sqlite3-doc /usr/share/doc/sqlite3/limits.html "$work")
mkdir -p "$dest"
for page in limits datatype3 wal lang_vacuum autoinc foreignkeys gencol withoutrowid stricttables json1; do
    cp "$docs/$page.html" "$dest/"
done
echo "sqlite_docs_corpus: $(ls "$dest" | wc -l) pages in $dest"
