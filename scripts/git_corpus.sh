#!/usr/bin/env bash
# Copies the Git manual pages named in corpora/git-manual/pages.txt
# into DIR, installing Debian's git-doc first when it is missing.
#
#   bash scripts/git_corpus.sh DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:?usage: git_corpus.sh DIR}
html=/usr/share/doc/git-doc
if [ ! -d "$html" ]; then
    apt-get update -qq && apt-get install -y -qq git-doc > /dev/null
fi
mkdir -p "$dest"
while read -r page; do
    [ -n "$page" ] && cp "$html/$page" "$dest/"
done < "$root/corpora/git-manual/pages.txt"
echo "git_corpus: $(ls "$dest" | wc -l) pages in $dest"
