package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const (
	k8sDir = "../.."
	topics = "../../../local/kafka/topics.txt"
)

// render builds an overlay in-process, as `kustomize build` does.
func render(t *testing.T, overlay string) string {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).
		Run(filesys.MakeFsOnDisk(), filepath.Join(k8sDir, "overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	out, err := resources.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func check(t *testing.T, rendered, namespace, require string) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(path, []byte(rendered), 0o600); err != nil {
		t.Fatal(err)
	}
	return run("test", filepath.Join(k8sDir, "crds"), require, topics, namespace, []string{path})
}

func TestOverlaysAreValid(t *testing.T) {
	for overlay, namespace := range map[string]string{"dev": "switchboard-dev", "prod": "switchboard"} {
		require := ""
		if overlay == "prod" {
			require = "../required-prod.txt"
		}
		if err := check(t, render(t, overlay), namespace, require); err != nil {
			t.Errorf("%s: %v", overlay, err)
		}
	}
}

// Each mutation of the rendered prod overlay is a mistake the check must name.
func TestCatchesMistakes(t *testing.T) {
	prod := render(t, "prod")
	cases := []struct {
		name, old, new, want string
	}{
		{"unknown field of a built-in kind", "revisionHistoryLimit: 5", "revisionHistoryLimt: 5",
			`unknown field "spec.revisionHistoryLimt"`},
		{"wrong type of a built-in field", "maxUnavailable: 1\n", "maxUnavailable: [1]\n",
			"strict decoding"},
		{"duplicate key", "  replicas: 3\n", "  replicas: 3\n  replicas: 4\n", `key "replicas" already set`},
		{"unknown field of a custom resource", "    listeners:\n", "    listener:\n",
			"additional properties 'listener' not allowed"},
		{"custom resource value outside its schema", "  partitions: 24\n", "  partitions: 0\n",
			"minimum"},
		{"more workers than partitions", "maxReplicaCount: 24", "maxReplicaCount: 25",
			"maxReplicaCount 25 exceeds the 24 partitions of llm.tasks.cheap"},
		{"lag of another consumer group", "consumerGroup: llm-worker-cheap", "consumerGroup: llm-worker",
			`consumerGroup "llm-worker", but the cheap tier's workers consume as "llm-worker-cheap"`},
		{"misspelt KEDA setting", "lagThreshold: \"5\"", "lagTreshold: \"5\"",
			`unknown kafka trigger metadata "lagTreshold"`},
		{"KEDA cannot resolve a short name", "switchboard-kafka-bootstrap.switchboard.svc:9092",
			"switchboard-kafka-bootstrap:9092", "bootstrapServers"},
		{"a cluster whose writes can never be acknowledged", "min.insync.replicas: 2", "min.insync.replicas: 4",
			"min.insync.replicas 4 above default.replication.factor 3"},
		{"a topic whose writes can never be acknowledged", "    min.insync.replicas: 2\n    retention.ms",
			"    min.insync.replicas: 4\n    retention.ms", "min.insync.replicas 4 above its 3 replicas"},
		{"more replicas than brokers", "  name: broker\n  namespace: switchboard\nspec:\n  replicas: 3",
			"  name: broker\n  namespace: switchboard\nspec:\n  replicas: 2",
			"3 replicas on 2 brokers"},
		{"missing ConfigMap key", "key: MONGO_HOSTS", "key: MONGO_HOST",
			"has no key MONGO_HOST"},
		{"service account token mounted", "automountServiceAccountToken: false\nkind: ServiceAccount",
			"automountServiceAccountToken: true\nkind: ServiceAccount", "automountServiceAccountToken must be false"},
		{"a committed Secret", "apiVersion: v1\nkind: Namespace",
			"apiVersion: v1\nkind: Secret\nmetadata:\n  name: leaked\n  namespace: switchboard\n" +
				"stringData:\n  key: value\n---\napiVersion: v1\nkind: Namespace",
			"Secrets are referenced, never committed"},
		{"a worker tier without autoscaling", "scaleTargetRef:\n    name: llm-worker-frontier",
			"scaleTargetRef:\n    name: llm-worker-spare", "a worker tier without a ScaledObject"},
		{"a deleted topic", "  name: chat.cancel\n", "  name: chat.cancelled\n",
			"topic chat.cancel of topics.txt has no KafkaTopic"},
		{"a catalogue without the tier", `"cheap": [`, `"cheep": [`,
			`the catalogue has no model for tier "cheap"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(prod, c.old) {
				t.Fatalf("the rendered prod overlay no longer contains %q: update the test", c.old)
			}
			err := check(t, strings.Replace(prod, c.old, c.new, 1), "switchboard", "../required-prod.txt")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v", c.want, err)
			}
		})
	}
}

func TestRequiredResources(t *testing.T) {
	require := filepath.Join(t.TempDir(), "required.txt")
	if err := os.WriteFile(require, []byte("Deployment gateway\nKafkaNodePool spare\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := check(t, render(t, "prod"), "switchboard", require)
	if err == nil || !strings.Contains(err.Error(), "required KafkaNodePool/spare is missing") ||
		strings.Contains(err.Error(), "Deployment/gateway") {
		t.Fatalf("want only KafkaNodePool/spare reported missing, got %v", err)
	}
}
