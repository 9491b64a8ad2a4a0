package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/yaml"
)

// object is one rendered document: its identity, its generic form and, for built-in kinds,
// the typed value it decoded into.
type object struct {
	gvk   schema.GroupVersionKind
	meta  metav1.ObjectMeta
	raw   map[string]any
	typed runtime.Object
}

func (o *object) ref() string { return o.gvk.Kind + "/" + o.meta.Name }

var (
	builtins = runtime.NewScheme()
	strict   *kjson.Serializer
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme, rbacv1.AddToScheme,
	} {
		if err := add(builtins); err != nil {
			panic(err)
		}
	}
	strict = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, builtins, builtins,
		kjson.SerializerOptions{Strict: true})
}

func describe(doc []byte) string {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	_ = yaml.Unmarshal(doc, &head)
	return head.Kind + "/" + head.Metadata.Name
}

// decode checks one document and returns it with every problem found.
func decode(doc []byte, crds map[schema.GroupVersionKind]*jsonschema.Schema) (*object, []string) {
	// YAMLToJSONStrict refuses duplicate keys, which plain YAML decoding silently merges.
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, []string{"not valid YAML: " + err.Error()}
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return nil, []string{"not a YAML mapping"}
	}
	apiVersion, _ := raw["apiVersion"].(string)
	kind, _ := raw["kind"].(string)
	if apiVersion == "" || kind == "" {
		return nil, []string{"apiVersion and kind are required"}
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, []string{err.Error()}
	}
	obj := &object{gvk: gv.WithKind(kind), raw: raw}
	var problems []string

	switch {
	case builtins.Recognizes(obj.gvk):
		typed, _, err := strict.Decode(data, nil, nil)
		if err != nil {
			return nil, []string{"strict decoding into " + obj.gvk.String() + ": " + err.Error()}
		}
		obj.typed = typed
		accessor, ok := typed.(metav1.ObjectMetaAccessor)
		if !ok {
			return nil, []string{"no object metadata"}
		}
		obj.meta = *accessor.GetObjectMeta().(*metav1.ObjectMeta)
	case crds[obj.gvk] != nil:
		if err := strictJSON(raw["metadata"], &obj.meta); err != nil {
			problems = append(problems, "metadata: "+err.Error())
		}
		instance, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, []string{err.Error()}
		}
		if err := crds[obj.gvk].Validate(instance); err != nil {
			problems = append(problems, "against its CRD schema: "+flatten(err))
		}
	default:
		return nil, []string{"unknown kind " + obj.gvk.String() +
			" (neither a built-in type nor a vendored CRD)"}
	}
	if obj.meta.Name == "" {
		problems = append(problems, "metadata.name is required")
	}
	return obj, problems
}

func strictJSON(value any, into any) error {
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	return decoder.Decode(into)
}

func flatten(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// loadCRDs compiles the schema of every served version of every CRD in dir.
func loadCRDs(dir string) (map[schema.GroupVersionKind]*jsonschema.Schema, error) {
	schemas := map[schema.GroupVersionKind]*jsonschema.Schema{}
	if dir == "" {
		return schemas, nil
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	compiler := jsonschema.NewCompiler()
	type pending struct {
		gvk schema.GroupVersionKind
		url string
	}
	var todo []pending
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		docs, err := splitDocuments(data)
		if err != nil {
			return nil, err
		}
		for _, doc := range docs {
			var crd struct {
				Kind string `json:"kind"`
				Spec struct {
					Group string `json:"group"`
					Names struct {
						Kind string `json:"kind"`
					} `json:"names"`
					Versions []struct {
						Name   string `json:"name"`
						Served bool   `json:"served"`
						Schema struct {
							OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
						} `json:"schema"`
					} `json:"versions"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal(doc, &crd); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			if crd.Kind != "CustomResourceDefinition" {
				return nil, fmt.Errorf("%s: %s is not a CustomResourceDefinition", file, crd.Kind)
			}
			for _, version := range crd.Spec.Versions {
				if !version.Served || version.Schema.OpenAPIV3Schema == nil {
					continue
				}
				gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: version.Name,
					Kind: crd.Spec.Names.Kind}
				root := toJSONSchema(version.Schema.OpenAPIV3Schema)
				// The API server owns these three; metadata is decoded strictly on its own.
				if props, ok := root["properties"].(map[string]any); ok {
					props["apiVersion"] = map[string]any{"const": gvk.GroupVersion().String()}
					props["kind"] = map[string]any{"const": gvk.Kind}
					props["metadata"] = map[string]any{"type": "object"}
					props["status"] = map[string]any{}
				}
				encoded, err := json.Marshal(root)
				if err != nil {
					return nil, err
				}
				doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(encoded))
				if err != nil {
					return nil, err
				}
				url := "mem://crds/" + gvk.Group + "/" + gvk.Version + "/" + gvk.Kind + ".json"
				if err := compiler.AddResource(url, doc); err != nil {
					return nil, err
				}
				todo = append(todo, pending{gvk, url})
			}
		}
	}
	for _, p := range todo {
		compiled, err := compiler.Compile(p.url)
		if err != nil {
			return nil, fmt.Errorf("compiling the schema of %s: %w", p.gvk, err)
		}
		schemas[p.gvk] = compiled
	}
	return schemas, nil
}

// toJSONSchema turns a structural OpenAPI v3 schema into the JSON Schema the API server
// effectively enforces: unknown fields are errors (the server would prune them silently,
// which hides typos), int-or-string and nullable are spelled out.
func toJSONSchema(node map[string]any) map[string]any {
	out := map[string]any{}
	for key, value := range node {
		switch key {
		case "properties", "patternProperties":
			props := map[string]any{}
			for name, sub := range value.(map[string]any) {
				props[name] = toJSONSchema(sub.(map[string]any))
			}
			out[key] = props
		case "items", "additionalProperties", "not":
			if sub, ok := value.(map[string]any); ok {
				out[key] = toJSONSchema(sub)
			} else {
				out[key] = value
			}
		case "allOf", "anyOf", "oneOf":
			var subs []any
			for _, sub := range value.([]any) {
				subs = append(subs, toJSONSchema(sub.(map[string]any)))
			}
			out[key] = subs
		case "description", "example", "x-kubernetes-validations":
			// Documentation, and CEL rules that only an API server evaluates.
		default:
			out[key] = value
		}
	}
	if node["x-kubernetes-int-or-string"] == true {
		delete(out, "type")
		if _, ok := out["anyOf"]; !ok {
			out["anyOf"] = []any{map[string]any{"type": "integer"}, map[string]any{"type": "string"}}
		}
	}
	if node["nullable"] == true {
		if t, ok := out["type"].(string); ok {
			out["type"] = []any{t, "null"}
		}
	}
	_, hasProps := node["properties"]
	_, hasAdditional := node["additionalProperties"]
	if hasProps && !hasAdditional && node["x-kubernetes-preserve-unknown-fields"] != true {
		out["additionalProperties"] = false
	}
	return out
}
