# syntax=docker/dockerfile:1
#
# pgmirror as a static, non-root container image:
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t pgmirror .
#
# The go build line below uses exactly the flags of the Makefile's static build (`make test`
# builds it); deploy/manifests_test.go fails when the two disagree. GO_VERSION must be at least
# the go line of go.mod (the same test checks that too).

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pgmirror .

# distroless/static: no shell, no libc (the binary needs none); CA certificates and tzdata included.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pgmirror /usr/local/bin/pgmirror
# nonroot (65532), as the Kubernetes manifests' runAsUser.
USER 65532:65532
# Admin HTTP (/healthz /readyz /metrics) when run with --http=:9187. Clients use the Unix socket
# (--socket, on a volume shared with the app); pgmirror never opens a TCP port for them.
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/pgmirror"]
CMD ["serve"]
