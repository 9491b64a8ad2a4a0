// Command k8scheck validates rendered Kubernetes manifests offline, as `make k8s-validate` runs it.
//
//	kustomize build deploy/k8s/overlays/prod | k8scheck -crds deploy/k8s/crds -require required-prod.txt ...
//
// Built-in kinds are decoded strictly into the k8s.io/api types (unknown or duplicate fields fail),
// custom resources are validated against the OpenAPI schemas of their vendored CRDs (unknown
// fields fail there too), and Switchboard's own rules are checked across documents: references
// resolve, every workload is probed, sized, spread and covered by a PodDisruptionBudget, KEDA
// never scales a tier past its topic's partitions, and no Secret value is committed.
//
// Why our own program: kubeconform downloads its schemas at run time, which CI cannot do.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	crdDir := flag.String("crds", "", "directory of CustomResourceDefinition YAML files")
	requireFile := flag.String("require", "", "file of `Kind name` lines that must be rendered")
	topicsFile := flag.String("topics", "", "topics.txt whose names must all exist as KafkaTopics")
	namespace := flag.String("namespace", "", "the namespace the overlay deploys to (checked)")
	label := flag.String("name", "manifests", "what is checked, for messages")
	flag.Parse()

	if err := run(*label, *crdDir, *requireFile, *topicsFile, *namespace, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(label, crdDir, requireFile, topicsFile, namespace string, files []string) error {
	crds, err := loadCRDs(crdDir)
	if err != nil {
		return err
	}
	var input []byte
	if len(files) == 0 {
		input, err = io.ReadAll(os.Stdin)
	} else {
		input, err = os.ReadFile(files[0])
	}
	if err != nil {
		return err
	}
	docs, err := splitDocuments(input)
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		return fmt.Errorf("%s: no documents", label)
	}

	report := &report{}
	set := newObjectSet()
	for i, doc := range docs {
		obj, problems := decode(doc, crds)
		for _, p := range problems {
			report.add("document %d (%s): %s", i+1, describe(doc), p)
		}
		if obj != nil {
			if prev := set.add(obj); prev != nil {
				report.add("%s is rendered twice", obj.ref())
			}
		}
	}
	checkAll(set, namespace, report)
	if requireFile != "" {
		if err := checkRequired(set, requireFile, report); err != nil {
			return err
		}
	}
	if topicsFile != "" {
		if err := checkTopicsFile(set, topicsFile, report); err != nil {
			return err
		}
	}
	if len(report.problems) > 0 {
		sort.Strings(report.problems)
		return fmt.Errorf("%s: %d problem(s):\n  %s", label, len(report.problems),
			strings.Join(report.problems, "\n  "))
	}
	fmt.Printf("%s: %d objects valid (%s)\n", label, len(set.all), set.summary())
	return nil
}

type report struct{ problems []string }

func (r *report) add(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// splitDocuments splits a YAML stream on `---` lines, dropping empty documents.
func splitDocuments(input []byte) ([][]byte, error) {
	var docs [][]byte
	var current bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(stripComments(current.Bytes()))) > 0 {
			docs = append(docs, append([]byte(nil), current.Bytes()...))
		}
		current.Reset()
	}
	scanner := bufio.NewScanner(bytes.NewReader(input))
	scanner.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.TrimRight(line, " \t") == "---" {
			flush()
			continue
		}
		current.WriteString(line)
		current.WriteByte('\n')
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	flush()
	return docs, nil
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// checkRequired asserts that every `Kind name` line of the file names a rendered object.
func checkRequired(set *objectSet, path string, r *report) error {
	lines, err := readLines(path)
	if err != nil {
		return err
	}
	if len(lines) == 0 {
		return errors.New(path + ": no requirements")
	}
	for _, line := range lines {
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return fmt.Errorf("%s: want `Kind name`, got %q", path, line)
		}
		if set.find(fields[0], fields[1]) == nil && !generated(set, fields[0], fields[1]) {
			r.add("required %s/%s is missing (%s)", fields[0], fields[1], filepath.Base(path))
		}
	}
	return nil
}

// checkTopicsFile asserts that the local stack's topics (deploy/local/kafka/topics.txt) exist
// as KafkaTopics, so that both environments speak of the same topics.
func checkTopicsFile(set *objectSet, path string, r *report) error {
	lines, err := readLines(path)
	if err != nil {
		return err
	}
	topics := kafkaTopics(set)
	for _, line := range lines {
		name := strings.Fields(line)[0]
		if _, ok := topics[name]; !ok {
			r.add("topic %s of %s has no KafkaTopic", name, filepath.Base(path))
		}
	}
	return nil
}

// readLines returns the non-empty lines of a file, without `#` comments.
func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	return lines, nil
}

// generated: a ConfigMap or Secret generator's output, named <name>-<content hash>.
func generated(set *objectSet, kind, name string) bool {
	for _, o := range set.ofKind(kind) {
		suffix, ok := strings.CutPrefix(o.meta.Name, name+"-")
		if ok && len(suffix) == 10 && strings.Trim(suffix, "abcdefghijklmnopqrstuvwxyz0123456789") == "" {
			return true
		}
	}
	return false
}
