#!/usr/bin/env bash
# Fetches the jars of the Apache Kafka broker pinned in infra/kafka/pom.xml from Maven Central
# into infra/kafka/.cache/libs, once: a stamp records which pom.xml was fetched, so a second run
# returns at once. Prints nothing when there is nothing to do.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pom=$here/pom.xml
cache=$here/.cache
libs=$cache/libs
stamp=$cache/libs.stamp

want=$(sha256sum "$pom" | cut -d' ' -f1)
fresh() { [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$libs/*.jar" >/dev/null; }
fresh && exit 0

mkdir -p "$cache"
exec 9>"$cache/fetch.lock"
flock 9 # another fetch.sh (a parallel start) may be fetching the same jars
fresh && exit 0

command -v mvn >/dev/null || { echo "fetch.sh: mvn (Maven) is required to fetch Kafka" >&2; exit 1; }
started=$(date +%s%3N)
tmp=$cache/libs.tmp
rm -rf "$tmp"
if ! mvn -q -B -Dstyle.color=never -f "$pom" \
  org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp" >"$cache/fetch.log" 2>&1; then
  echo "fetch.sh: Maven could not fetch the Kafka jars:" >&2
  cat "$cache/fetch.log" >&2
  exit 1
fi

# The scripts need these two classes; fail here, clearly, rather than at start.
for class in kafka/Kafka.class kafka/tools/StorageTool.class; do
  found=
  for jar in "$tmp"/*.jar; do
    if command -v unzip >/dev/null; then
      unzip -Z1 "$jar" "$class" >/dev/null 2>&1 && { found=$jar; break; }
    else
      jar tf "$jar" | grep -xF "$class" >/dev/null && { found=$jar; break; }
    fi
  done
  if [[ -z "$found" ]]; then
    echo "fetch.sh: no jar in $tmp contains $class; is pom.xml pinning a Kafka 4.x broker (kafka_2.13)?" >&2
    exit 1
  fi
done

rm -rf "$libs"
mv "$tmp" "$libs"
echo "$want" >"$stamp"
ms=$(($(date +%s%3N) - started))
printf 'fetch.sh: %s jars (%s) in %s, %d.%ds\n' "$(find "$libs" -name '*.jar' | wc -l)" \
  "$(du -sh "$libs" | cut -f1)" "$libs" $((ms / 1000)) $((ms % 1000 / 100))
