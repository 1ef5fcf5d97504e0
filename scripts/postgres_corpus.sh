#!/usr/bin/env bash
# Copies the PostgreSQL manual pages named in corpora/postgres-manual/pages.txt
# into DIR, installing Debian's postgresql-doc-15 first when it is missing.
#
#   bash scripts/postgres_corpus.sh DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:?usage: postgres_corpus.sh DIR}
html=/usr/share/doc/postgresql-doc-15/html
if [ ! -d "$html" ]; then
    apt-get update -qq && apt-get install -y -qq postgresql-doc-15 > /dev/null
fi
mkdir -p "$dest"
while read -r page; do
    [ -n "$page" ] && cp "$html/$page" "$dest/"
done < "$root/corpora/postgres-manual/pages.txt"
echo "postgres_corpus: $(ls "$dest" | wc -l) pages in $dest"
