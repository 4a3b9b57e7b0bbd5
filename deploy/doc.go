// Package deploy holds the deployment files: Kubernetes manifests in
// kubernetes/, and (at the repository root) the Dockerfile. It has no code;
// its tests check that the manifests and the Dockerfile agree with what
// pgmirror needs and with the Makefile's static build.
package deploy
