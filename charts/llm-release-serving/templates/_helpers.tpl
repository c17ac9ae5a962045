{{/* Chart name, "nameOverride" if set. */}}
{{- define "llm-release-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: "<release>-<chart>", or fullnameOverride. */}}
{{- define "llm-release-serving.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "llm-release-serving.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "llm-release-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-release
{{- end }}

{{/* Labels that select all of this release's Triton pods. */}}
{{- define "llm-release-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-release-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: triton
{{- end }}

{{/*
The helpers below take (dict "root" $ "v" <entry of traffic.versions>).
Pods of one version: the release's selector labels plus the serving-version label, which the
per-version Service, the Istio subset and the ServiceMonitor's target label all use.
*/}}
{{- define "llm-release-serving.versionSelectorLabels" -}}
{{ include "llm-release-serving.selectorLabels" .root }}
llm-release/serving-version: {{ .v.name | quote }}
{{- end }}

{{/* "<fullname>-<version name>": the Deployment and Service of one version. */}}
{{- define "llm-release-serving.versionFullname" -}}
{{- printf "%s-%s" (include "llm-release-serving.fullname" .root) .v.name }}
{{- end }}

{{/* The Triton image of one version. */}}
{{- define "llm-release-serving.image" -}}
{{- $img := .root.Values.triton.image }}
{{- printf "%s:%s-%s" $img.repository (default $img.tag .v.imageTag) $img.variant }}
{{- end }}

{{/* The model repository claim's name. */}}
{{- define "llm-release-serving.claimName" -}}
{{- default (printf "%s-models" (include "llm-release-serving.fullname" .)) .Values.modelRepository.existingClaim }}
{{- end }}

{{/* FQDN of the shared Service (Istio hosts and destinations). */}}
{{- define "llm-release-serving.serviceFQDN" -}}
{{- printf "%s.%s.svc.%s" (include "llm-release-serving.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* A Prometheus duration of the form "<n>s" or "<n>ms" in milliseconds; fails otherwise. */}}
{{- define "llm-release-serving.durationMs" -}}
{{- $d := toString .value }}
{{- if regexMatch "^[0-9]+ms$" $d }}
{{- trimSuffix "ms" $d | atoi }}
{{- else if regexMatch "^[0-9]+s$" $d }}
{{- mul (trimSuffix "s" $d | atoi) 1000 }}
{{- else }}
{{- fail (printf "%s: %q is not a duration of the form \"<n>s\" or \"<n>ms\" (e.g. \"5s\")" .field $d) }}
{{- end }}
{{- end }}

{{/*
Checks of the values that Kubernetes would not catch, or would catch only half-way through an
upgrade. Rendered once, from deployment.yaml.
*/}}
{{- define "llm-release-serving.validate" -}}
{{- $provider := toString .Values.traffic.provider }}
{{- if not (has $provider (list "none" "istio" "gatewayapi")) }}
{{- fail (printf "traffic.provider: %q is not one of \"none\", \"istio\", \"gatewayapi\"" $provider) }}
{{- end }}
{{- if not (kindIs "string" .Values.triton.image.tag) }}
{{- fail (printf "triton.image.tag: %v is not a string; quote it, e.g. tag: \"25.10\" (an unquoted 25.10 is the number 25.1)" .Values.triton.image.tag) }}
{{- end }}
{{- $versions := .Values.traffic.versions }}
{{- if or (not (kindIs "slice" $versions)) (eq (len $versions) 0) }}
{{- fail "traffic.versions: give at least one version, e.g. [{name: stable, weight: 100}]" }}
{{- end }}
{{- $fullname := include "llm-release-serving.fullname" . }}
{{- $seen := dict }}
{{- $total := 0 }}
{{- $parts := list }}
{{- range $i, $v := $versions }}
{{- if not (kindIs "map" $v) }}
{{- fail (printf "traffic.versions[%d]: expected {name, weight}, got %v" $i $v) }}
{{- end }}
{{- $name := toString (default "" $v.name) }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "traffic.versions[%d].name: %q is not a DNS label (lower-case letters, digits and \"-\", starting with a letter)" $i $name) }}
{{- end }}
{{- if hasKey $seen $name }}
{{- fail (printf "traffic.versions[%d].name: %q appears twice; version names must be unique" $i $name) }}
{{- end }}
{{- $_ := set $seen $name true }}
{{- if gt (len (printf "%s-%s" $fullname $name)) 63 }}
{{- fail (printf "traffic.versions[%d].name: %q makes the resource name %s-%s longer than 63 characters; use a shorter version name or fullnameOverride" $i $name $fullname $name) }}
{{- end }}
{{- if and (hasKey $v "imageTag") (not (kindIs "string" $v.imageTag)) }}
{{- fail (printf "traffic.versions[%d].imageTag: %v is not a string; quote it, e.g. imageTag: \"25.10\"" $i $v.imageTag) }}
{{- end }}
{{- $w := $v.weight }}
{{- if not (or (kindIs "float64" $w) (kindIs "int64" $w) (kindIs "int" $w)) }}
{{- fail (printf "traffic.versions[%d].weight (%s): %v is not a number; give an integer percent 0..100" $i $name $w) }}
{{- end }}
{{- if ne (toString (int64 $w)) (toString $w) }}
{{- fail (printf "traffic.versions[%d].weight (%s): %v is not an integer percent" $i $name $w) }}
{{- end }}
{{- if or (lt (int64 $w) 0) (gt (int64 $w) 100) }}
{{- fail (printf "traffic.versions[%d].weight (%s): %v is outside 0..100" $i $name $w) }}
{{- end }}
{{- $total = add $total (int64 $w) }}
{{- $parts = append $parts (printf "%s=%d" $name (int64 $w)) }}
{{- end }}
{{- if ne (int64 $total) 100 }}
{{- fail (printf "traffic.versions: weights sum to %d, not 100 (%s); make the percentages add up to exactly 100" (int64 $total) (join ", " $parts)) }}
{{- end }}
{{- if and (eq $provider "gatewayapi") .Values.traffic.pinHeader (gt (len $versions) 15) }}
{{- fail (printf "traffic.versions: %d versions need %d HTTPRoute rules with pinning routes, and Gateway API allows 16; park old versions or set traffic.pinHeader: \"\"" (len $versions) (add1 (len $versions))) }}
{{- end }}
{{- if .Values.serviceMonitor.enabled }}
{{- $interval := include "llm-release-serving.durationMs" (dict "field" "serviceMonitor.interval" "value" .Values.serviceMonitor.interval) | atoi }}
{{- if or (lt $interval 1000) (gt $interval 15000) }}
{{- fail (printf "serviceMonitor.interval: %v is outside 1s..15s" .Values.serviceMonitor.interval) }}
{{- end }}
{{- with .Values.serviceMonitor.scrapeTimeout }}
{{- $timeout := include "llm-release-serving.durationMs" (dict "field" "serviceMonitor.scrapeTimeout" "value" .) | atoi }}
{{- if gt $timeout $interval }}
{{- fail (printf "serviceMonitor.scrapeTimeout: %v is longer than the interval %v" . $.Values.serviceMonitor.interval) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
