#!/usr/bin/env bash
# Regenerates the vendored CRDs that `make k8s-validate` checks custom resources against.
#   Strimzi: generated from its API model with its own CRD generator, exactly as Strimzi's build
#            does (both from Maven Central; the generator needs Java 21+: set JAVA).
#   KEDA:    copied from the Go module github.com/kedacore/keda/v2 (Go module proxy).
# Versions: strimzi.version in pom.xml, KEDA_VERSION below. Review the diff, then commit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
KEDA_VERSION=v2.21.0
JAVA="${JAVA:-java}"

classpath="$(mktemp)"
trap 'rm -f "$classpath"' EXIT
mvn -q dependency:build-classpath -Dmdep.outputFile="$classpath"
"$JAVA" -cp "$(cat "$classpath")" io.strimzi.crdgenerator.CrdGenerator \
	--label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ \
	--crd-api-version v1 --api-versions v1 --storage-version v1 --yaml \
	"io.strimzi.api.kafka.model.kafka.Kafka=$PWD/040-Crd-kafka.yaml" \
	"io.strimzi.api.kafka.model.topic.KafkaTopic=$PWD/043-Crd-kafkatopic.yaml" \
	"io.strimzi.api.kafka.model.nodepool.KafkaNodePool=$PWD/045-Crd-kafkanodepool.yaml"

keda_dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
install -m 0644 "$keda_dir/config/crd/bases/keda.sh_scaledobjects.yaml" keda.sh_scaledobjects.yaml
echo "CRDs updated: Strimzi $(sed -n 's:.*<strimzi.version>\(.*\)</strimzi.version>.*:\1:p' pom.xml), KEDA $KEDA_VERSION"
