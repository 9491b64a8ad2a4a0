package main

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type objectSet struct {
	all    []*object
	byName map[string]*object
}

func newObjectSet() *objectSet { return &objectSet{byName: map[string]*object{}} }

// add stores obj and returns the object it collides with, if any.
func (s *objectSet) add(obj *object) *object {
	key := obj.gvk.Kind + "/" + obj.meta.Name
	if prev := s.byName[key]; prev != nil {
		return prev
	}
	s.byName[key] = obj
	s.all = append(s.all, obj)
	return nil
}

func (s *objectSet) find(kind, name string) *object { return s.byName[kind+"/"+name] }

func (s *objectSet) ofKind(kind string) []*object {
	var out []*object
	for _, o := range s.all {
		if o.gvk.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (s *objectSet) summary() string {
	counts := map[string]int{}
	for _, o := range s.all {
		counts[o.gvk.Kind]++
	}
	var parts []string
	for kind, n := range counts {
		parts = append(parts, fmt.Sprintf("%d %s", n, kind))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// workload is a pod template with the object that owns it.
type workload struct {
	obj      *object
	pod      *corev1.PodTemplateSpec
	selector *metav1.LabelSelector
	replicas *int32
	long     bool     // runs until stopped (Deployment, StatefulSet), as opposed to a Job
	claims   []string // volumeClaimTemplates of a StatefulSet
}

func workloads(set *objectSet) []workload {
	var out []workload
	for _, o := range set.all {
		switch t := o.typed.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{o, &t.Spec.Template, t.Spec.Selector, t.Spec.Replicas, true, nil})
		case *appsv1.StatefulSet:
			var claims []string
			for _, c := range t.Spec.VolumeClaimTemplates {
				claims = append(claims, c.Name)
			}
			out = append(out, workload{o, &t.Spec.Template, t.Spec.Selector, t.Spec.Replicas, true, claims})
		case *batchv1.Job:
			out = append(out, workload{o, &t.Spec.Template, nil, nil, false, nil})
		}
	}
	return out
}

func checkAll(set *objectSet, namespace string, r *report) {
	configMaps := map[string]*corev1.ConfigMap{}
	for _, o := range set.all {
		switch t := o.typed.(type) {
		case *corev1.Secret:
			r.add("%s: Secrets are referenced, never committed (create it in the cluster)", o.ref())
		case *corev1.ConfigMap:
			configMaps[t.Name] = t
		}
		if namespace != "" && o.gvk.Kind != "Namespace" && o.meta.Namespace != namespace {
			r.add("%s: namespace %q, want %q", o.ref(), o.meta.Namespace, namespace)
		}
	}
	if namespace != "" && set.find("Namespace", namespace) == nil {
		r.add("Namespace/%s is not rendered", namespace)
	}
	all := workloads(set)
	for _, w := range all {
		checkWorkload(set, w, configMaps, r)
	}
	checkServices(set, all, r)
	checkAutoscaling(set, configMaps, namespace, r)
	checkKafka(set, r)
}

func checkWorkload(set *objectSet, w workload, configMaps map[string]*corev1.ConfigMap, r *report) {
	ref := w.obj.ref()
	spec := &w.pod.Spec
	podLabels := labels.Set(w.pod.Labels)
	if w.selector != nil {
		selector, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || !selector.Matches(podLabels) {
			r.add("%s: the selector does not match the pod template's labels", ref)
		}
	}
	if spec.ServiceAccountName == "" {
		r.add("%s: no serviceAccountName (the default account must not be used)", ref)
	} else if sa := set.find("ServiceAccount", spec.ServiceAccountName); sa == nil {
		r.add("%s: ServiceAccount/%s is not rendered", ref, spec.ServiceAccountName)
	} else if a := sa.typed.(*corev1.ServiceAccount).AutomountServiceAccountToken; a == nil || *a {
		r.add("ServiceAccount/%s: automountServiceAccountToken must be false", sa.meta.Name)
	}
	if a := spec.AutomountServiceAccountToken; a == nil || *a {
		r.add("%s: automountServiceAccountToken must be false in the pod spec", ref)
	}
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		r.add("%s: the pod must set runAsNonRoot: true", ref)
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
	}
	for _, claim := range w.claims {
		volumes[claim] = true
	}
	for i := range spec.InitContainers {
		checkContainer(ref, &spec.InitContainers[i], false, volumes, configMaps, r)
	}
	for i := range spec.Containers {
		checkContainer(ref, &spec.Containers[i], w.long, volumes, configMaps, r)
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil && configMaps[v.ConfigMap.Name] == nil && !isTrue(v.ConfigMap.Optional) {
			r.add("%s: volume %s: ConfigMap/%s is not rendered", ref, v.Name, v.ConfigMap.Name)
		}
	}
	if !w.long {
		return
	}
	if len(spec.TopologySpreadConstraints) == 0 {
		r.add("%s: no topologySpreadConstraints", ref)
	}
	for _, c := range spec.TopologySpreadConstraints {
		selector, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
		if err != nil || c.LabelSelector == nil || !selector.Matches(podLabels) {
			r.add("%s: topology spread on %s does not select its own pods", ref, c.TopologyKey)
		}
	}
	if !ignored(w.obj, "poddisruptionbudget") && !coveredByPDB(set, w.obj.meta.Namespace, podLabels) {
		r.add("%s: no PodDisruptionBudget selects its pods", ref)
	}
	if !selectedByNetworkPolicy(set, podLabels) {
		r.add("%s: no NetworkPolicy selects its pods", ref)
	}
}

func checkContainer(ref string, c *corev1.Container, long bool, volumes map[string]bool,
	configMaps map[string]*corev1.ConfigMap, r *report) {
	where := fmt.Sprintf("%s container %s", ref, c.Name)
	if !strings.Contains(imageName(c.Image), ":") && !strings.Contains(c.Image, "@") ||
		strings.HasSuffix(c.Image, ":latest") {
		r.add("%s: image %q needs a pinned tag or digest", where, c.Image)
	}
	for _, resource := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[resource]; !ok {
			r.add("%s: no %s request", where, resource)
		}
		if _, ok := c.Resources.Limits[resource]; !ok {
			r.add("%s: no %s limit", where, resource)
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil ||
		*sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		r.add("%s: needs allowPrivilegeEscalation: false and readOnlyRootFilesystem: true", where)
	}
	if long {
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			r.add("%s: needs a readiness and a liveness probe", where)
		}
		for _, probe := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			if probe == nil {
				continue
			}
			if port, ok := probePort(probe); ok && !hasPort(c, port) {
				r.add("%s: a probe uses port %s, which the container does not declare", where, port.String())
			}
		}
	}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef != nil && configMaps[from.ConfigMapRef.Name] == nil &&
			!isTrue(from.ConfigMapRef.Optional) {
			r.add("%s: envFrom ConfigMap/%s is not rendered", where, from.ConfigMapRef.Name)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.ConfigMapKeyRef
		cm := configMaps[ref.Name]
		if isTrue(ref.Optional) {
			continue
		}
		if cm == nil {
			r.add("%s: env %s: ConfigMap/%s is not rendered", where, e.Name, ref.Name)
		} else if _, ok := cm.Data[ref.Key]; !ok {
			r.add("%s: env %s: ConfigMap/%s has no key %s", where, e.Name, ref.Name, ref.Key)
		}
	}
	for _, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			r.add("%s: mounts volume %s, which the pod does not define", where, m.Name)
		}
	}
}

func checkServices(set *objectSet, all []workload, r *report) {
	for _, o := range set.ofKind("Service") {
		svc := o.typed.(*corev1.Service)
		if len(svc.Spec.Selector) == 0 {
			r.add("%s: no selector", o.ref())
			continue
		}
		selector := labels.SelectorFromSet(svc.Spec.Selector)
		var targets []workload
		for _, w := range all {
			if w.long && w.obj.meta.Namespace == o.meta.Namespace && selector.Matches(labels.Set(w.pod.Labels)) {
				targets = append(targets, w)
			}
		}
		if len(targets) == 0 {
			r.add("%s: selects no pods", o.ref())
			continue
		}
		for _, port := range svc.Spec.Ports {
			for _, w := range targets {
				if port.TargetPort.Type == intstr.String && !podHasPort(w.pod, port.TargetPort) {
					r.add("%s: targetPort %s is not a port of %s", o.ref(), port.TargetPort.String(), w.obj.ref())
				}
			}
		}
	}
}

// checkAutoscaling: HPAs and ScaledObjects target existing Deployments that leave the replica
// count to them; each worker tier scales on the lag of its own topic, within its partitions.
func checkAutoscaling(set *objectSet, configMaps map[string]*corev1.ConfigMap, namespace string, r *report) {
	scaled := map[string]string{}
	for _, o := range set.ofKind("HorizontalPodAutoscaler") {
		hpa := o.typed.(*autoscalingv2.HorizontalPodAutoscaler)
		target := hpa.Spec.ScaleTargetRef
		if target.Kind != "Deployment" || set.find("Deployment", target.Name) == nil {
			r.add("%s: targets %s/%s, which is not a rendered Deployment", o.ref(), target.Kind, target.Name)
			continue
		}
		scaled[target.Name] = o.ref()
	}
	topics := kafkaTopics(set)
	for _, o := range set.ofKind("ScaledObject") {
		spec, _ := o.raw["spec"].(map[string]any)
		target, _ := spec["scaleTargetRef"].(map[string]any)
		name, _ := target["name"].(string)
		deployment := set.find("Deployment", name)
		if kind, _ := target["kind"].(string); deployment == nil || (kind != "" && kind != "Deployment") {
			r.add("%s: targets %s, which is not a rendered Deployment", o.ref(), name)
			continue
		}
		if prev, ok := scaled[name]; ok {
			r.add("%s: Deployment/%s is already scaled by %s", o.ref(), name, prev)
		}
		scaled[name] = o.ref()
		maxReplicas, ok := spec["maxReplicaCount"].(float64)
		if !ok {
			r.add("%s: maxReplicaCount must be set (KEDA's default of 100 ignores the partitions)", o.ref())
		}
		minReplicas, _ := spec["minReplicaCount"].(float64)
		if minReplicas > maxReplicas {
			r.add("%s: minReplicaCount %v above maxReplicaCount %v", o.ref(), minReplicas, maxReplicas)
		}
		env := containerEnv(deployment.typed.(*appsv1.Deployment), configMaps)
		tiers := env["SWITCHBOARD_LLM_WORKER_TIERS"]
		checkCatalogue(o, env["SWITCHBOARD_LLM_WORKER_CATALOGUE"], tiers, r)
		triggers, _ := spec["triggers"].([]any)
		if len(triggers) == 0 {
			r.add("%s: no triggers", o.ref())
		}
		for _, t := range triggers {
			trigger, _ := t.(map[string]any)
			if trigger["type"] != "kafka" {
				r.add("%s: trigger type %v, want kafka (consumer-group lag)", o.ref(), trigger["type"])
				continue
			}
			metadata := map[string]string{}
			for key, value := range trigger["metadata"].(map[string]any) {
				metadata[key], _ = value.(string)
				if !kedaKafkaMetadata[key] {
					r.add("%s: unknown kafka trigger metadata %q", o.ref(), key)
				}
			}
			topicName := metadata["topic"]
			partitions, found := topics[topicName]
			if !found {
				r.add("%s: topic %q is not a rendered KafkaTopic", o.ref(), topicName)
			} else if ok && int64(maxReplicas) > partitions {
				r.add("%s: maxReplicaCount %v exceeds the %d partitions of %s (extra pods would idle)",
					o.ref(), maxReplicas, partitions, topicName)
			}
			if tiers == "" || strings.Contains(tiers, ",") {
				r.add("%s: Deployment/%s must serve exactly one tier (SWITCHBOARD_LLM_WORKER_TIERS=%q)",
					o.ref(), name, tiers)
			} else {
				if want := "llm-worker-" + tiers; metadata["consumerGroup"] != want {
					r.add("%s: consumerGroup %q, but the %s tier's workers consume as %q", o.ref(),
						metadata["consumerGroup"], tiers, want)
				}
				if want := "llm.tasks." + tiers; topicName != want {
					r.add("%s: topic %q, but the %s tier reads %q", o.ref(), topicName, tiers, want)
				}
			}
			if n, err := strconv.Atoi(metadata["lagThreshold"]); err != nil || n < 1 {
				r.add("%s: lagThreshold must be a positive integer, got %q", o.ref(), metadata["lagThreshold"])
			}
			checkBootstrap(set, o, metadata["bootstrapServers"], namespace, r)
		}
	}
	for _, o := range set.ofKind("Deployment") {
		d := o.typed.(*appsv1.Deployment)
		if by, ok := scaled[o.meta.Name]; ok && d.Spec.Replicas != nil {
			r.add("%s: sets replicas although %s owns the count (each apply would reset it)", o.ref(), by)
		}
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == "llm-worker" {
			if _, ok := scaled[o.meta.Name]; !ok {
				r.add("%s: a worker tier without a ScaledObject", o.ref())
			}
		}
	}
}

// KEDA's kafka scaler reads these trigger metadata keys (pkg/scalers/kafka_scaler.go, v2.21);
// KEDA ignores others silently, so a typo would disable the setting without a word.
var kedaKafkaMetadata = map[string]bool{
	"bootstrapServers": true, "consumerGroup": true, "topic": true, "partitionLimitation": true,
	"lagThreshold": true, "activationLagThreshold": true, "offsetResetPolicy": true,
	"allowIdleConsumers": true, "excludePersistentLag": true, "scaleToZeroOnInvalidOffset": true,
	"limitToPartitionsWithLag": true, "ensureEvenDistributionOfPartitions": true,
	"fullMetadata": true, "version": true, "tls": true, "unsafeSsl": true, "sasl": true,
	"saslTokenProvider": true, "awsRegion": true,
}

// checkBootstrap: KEDA runs in its own namespace, so the address must name the namespace.
func checkBootstrap(set *objectSet, o *object, servers, namespace string, r *report) {
	for _, server := range strings.Split(servers, ",") {
		host, port, err := net.SplitHostPort(strings.TrimSpace(server))
		if err != nil {
			r.add("%s: bootstrapServers %q: %v", o.ref(), servers, err)
			continue
		}
		found := false
		for _, kafka := range set.ofKind("Kafka") {
			base := kafka.meta.Name + "-kafka-bootstrap"
			want := []string{base + "." + namespace + ".svc", base + "." + namespace + ".svc.cluster.local"}
			if namespace == "" {
				want = append(want, base)
			}
			for _, w := range want {
				found = found || (host == w && port == "9092")
			}
		}
		if !found {
			r.add("%s: bootstrapServers %q is not <kafka>-kafka-bootstrap.%s.svc:9092", o.ref(), server, namespace)
		}
	}
}

// checkKafka: topics fit their cluster, and the cluster runs in KRaft mode on node pools.
func checkKafka(set *objectSet, r *report) {
	brokers := map[string]int64{}
	controllers := map[string]int64{}
	for _, o := range set.ofKind("KafkaNodePool") {
		cluster := o.meta.Labels["strimzi.io/cluster"]
		if set.find("Kafka", cluster) == nil {
			r.add("%s: strimzi.io/cluster %q names no rendered Kafka", o.ref(), cluster)
		}
		spec, _ := o.raw["spec"].(map[string]any)
		replicas, _ := spec["replicas"].(float64)
		roles, _ := spec["roles"].([]any)
		for _, role := range roles {
			switch role {
			case "broker":
				brokers[cluster] += int64(replicas)
			case "controller":
				controllers[cluster] += int64(replicas)
			}
		}
	}
	for _, o := range set.ofKind("Kafka") {
		if controllers[o.meta.Name] == 0 || brokers[o.meta.Name] == 0 {
			r.add("%s: needs KafkaNodePools with the controller and the broker roles", o.ref())
		}
		spec, _ := o.raw["spec"].(map[string]any)
		kafka, _ := spec["kafka"].(map[string]any)
		config, _ := kafka["config"].(map[string]any)
		factor, hasFactor := config["default.replication.factor"].(float64)
		if hasFactor && int64(factor) > brokers[o.meta.Name] {
			r.add("%s: default.replication.factor %v on %d brokers", o.ref(), factor, brokers[o.meta.Name])
		}
		if isr, ok := config["min.insync.replicas"].(float64); ok && hasFactor && isr > factor {
			r.add("%s: min.insync.replicas %v above default.replication.factor %v: writes would fail",
				o.ref(), isr, factor)
		}
		if n := controllers[o.meta.Name]; n%2 == 0 && n > 0 {
			r.add("%s: %d KRaft controllers; an odd number tolerates as many failures with fewer nodes", o.ref(), n)
		}
	}
	for _, o := range set.ofKind("KafkaTopic") {
		cluster := o.meta.Labels["strimzi.io/cluster"]
		if set.find("Kafka", cluster) == nil {
			r.add("%s: strimzi.io/cluster %q names no rendered Kafka", o.ref(), cluster)
			continue
		}
		spec, _ := o.raw["spec"].(map[string]any)
		replicas, _ := spec["replicas"].(float64)
		if int64(replicas) > brokers[cluster] {
			r.add("%s: %v replicas on %d brokers", o.ref(), replicas, brokers[cluster])
		}
		config, _ := spec["config"].(map[string]any)
		if isr, ok := config["min.insync.replicas"].(float64); ok && isr > replicas {
			r.add("%s: min.insync.replicas %v above its %v replicas: every write would fail", o.ref(), isr, replicas)
		}
		if _, ok := config["retention.ms"]; !ok {
			r.add("%s: no retention.ms", o.ref())
		}
	}
}

// kafkaTopics maps topic names (spec.topicName, else the resource name) to partitions.
func kafkaTopics(set *objectSet) map[string]int64 {
	topics := map[string]int64{}
	for _, o := range set.ofKind("KafkaTopic") {
		spec, _ := o.raw["spec"].(map[string]any)
		name, _ := spec["topicName"].(string)
		if name == "" {
			name = o.meta.Name
		}
		partitions, _ := spec["partitions"].(float64)
		topics[name] = int64(partitions)
	}
	return topics
}

// containerEnv: the plain values every container of d sees, from ConfigMaps and literals.
func containerEnv(d *appsv1.Deployment, configMaps map[string]*corev1.ConfigMap) map[string]string {
	env := map[string]string{}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, from := range c.EnvFrom {
			if from.ConfigMapRef != nil && configMaps[from.ConfigMapRef.Name] != nil {
				for k, v := range configMaps[from.ConfigMapRef.Name].Data {
					env[from.Prefix+k] = v
				}
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				env[e.Name] = e.Value
			}
		}
	}
	return env
}

func coveredByPDB(set *objectSet, namespace string, podLabels labels.Set) bool {
	for _, o := range set.ofKind("PodDisruptionBudget") {
		pdb := o.typed.(*policyv1.PodDisruptionBudget)
		selector, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err == nil && pdb.Namespace == namespace && !selector.Empty() && selector.Matches(podLabels) {
			return true
		}
	}
	return false
}

func selectedByNetworkPolicy(set *objectSet, podLabels labels.Set) bool {
	for _, o := range set.ofKind("NetworkPolicy") {
		np := o.typed.(*networkingv1.NetworkPolicy)
		selector, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err == nil && selector.Matches(podLabels) {
			return true
		}
	}
	return false
}

// ignored: the object opts out of a check with kube-score's annotation, which names the check.
func ignored(o *object, check string) bool {
	return strings.Contains(o.meta.Annotations["kube-score/ignore"], check)
}

func probePort(p *corev1.Probe) (intstr.IntOrString, bool) {
	switch {
	case p.HTTPGet != nil:
		return p.HTTPGet.Port, true
	case p.TCPSocket != nil:
		return p.TCPSocket.Port, true
	case p.GRPC != nil:
		return intstr.FromInt32(p.GRPC.Port), true
	}
	return intstr.IntOrString{}, false
}

func hasPort(c *corev1.Container, port intstr.IntOrString) bool {
	for _, p := range c.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) ||
			(port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return true
		}
	}
	return false
}

func podHasPort(pod *corev1.PodTemplateSpec, port intstr.IntOrString) bool {
	for i := range pod.Spec.Containers {
		if hasPort(&pod.Spec.Containers[i], port) {
			return true
		}
	}
	return false
}

func imageName(image string) string {
	// The registry host may carry a port (host:5000/name): only the last path element has the tag.
	return image[strings.LastIndex(image, "/")+1:]
}

func isTrue(b *bool) bool { return b != nil && *b }

// catalogue is SWITCHBOARD_LLM_WORKER_CATALOGUE: tier -> ordered models.
type catalogue map[string][]struct {
	Provider string `json:"provider"`
	Model    string `json:"model"`
}

// checkCatalogue: the worker's catalogue (when its ConfigMaps set one) has models for its tier.
func checkCatalogue(o *object, text, tier string, r *report) {
	if text == "" {
		return // the built-in default catalogue of the worker applies
	}
	var c catalogue
	if err := json.Unmarshal([]byte(text), &c); err != nil {
		r.add("%s: SWITCHBOARD_LLM_WORKER_CATALOGUE is not valid JSON: %v", o.ref(), err)
		return
	}
	if len(c[tier]) == 0 {
		r.add("%s: the catalogue has no model for tier %q", o.ref(), tier)
	}
	for name, models := range c {
		for _, m := range models {
			if (m.Provider != "openai" && m.Provider != "anthropic") || m.Model == "" {
				r.add("%s: catalogue tier %s: bad entry provider=%q model=%q", o.ref(), name, m.Provider, m.Model)
			}
		}
	}
}
