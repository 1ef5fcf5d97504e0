#!/usr/bin/env bash
# pyspark (from the Python package registry; it runs on the JVM these
# machines have) in its own virtual environment, for the Spark job's test.
set -euo pipefail
VENV=${LORE_SPARK_VENV:-$HOME/.cache/lore/spark-venv}
command -v java >/dev/null || { echo "install-spark: a Java runtime (17+) is required" >&2; exit 1; }
if ! "$VENV/bin/python" -c "import pyspark" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "pyspark==4.3.0"
fi
"$VENV/bin/python" -c "import pyspark; print('pyspark', pyspark.__version__, 'in', '$VENV')"
