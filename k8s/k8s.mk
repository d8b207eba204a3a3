# Deployment targets (included from the Makefile). No cluster needed: everything renders offline.
#   make image      build the service image (needs a Docker engine; IMAGE/TAG override the name)
#   make k8s-build  render every overlay into build/k8s/<overlay>.yaml
#   make envoy      render the Envoy front proxy for every values file into build/envoy/<env>.yaml
#   make k8s-check  the deployability tests: Dockerfile lint, schemas, policy, Envoy, descriptor set
K8S_OVERLAYS := dev test prod
IMAGE ?= smvm
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
KUSTOMIZE := $(VENV)/bin/kubectl kustomize --load-restrictor LoadRestrictionsNone
ENVOY_VALUES := $(wildcard k8s/envoy/values/*.yaml)

.PHONY: image k8s-build envoy k8s-check

image:
	docker build --pull -t $(IMAGE):$(TAG) .

k8s-build: $(STAMP)
	@mkdir -p build/k8s
	@for overlay in $(K8S_OVERLAYS); do \
	  $(KUSTOMIZE) k8s/overlays/$$overlay > build/k8s/$$overlay.yaml || exit 1; \
	  echo "build/k8s/$$overlay.yaml"; \
	done

envoy: $(STAMP)
	$(PY) k8s/envoy/render.py $(ENVOY_VALUES) --out-dir build/envoy

k8s-check: $(STAMP)
	$(PY) -m pytest -q tests/k8s
