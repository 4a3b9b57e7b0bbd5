module pgmirror

go 1.26.8

require (
	github.com/hashicorp/go-hclog v1.6.3
	github.com/lib/pq v1.12.3
)

require (
	github.com/fatih/color v1.13.0 // indirect
	github.com/mattn/go-colorable v0.1.12 // indirect
	github.com/mattn/go-isatty v0.0.14 // indirect
	github.com/stretchr/testify v1.11.1 // indirect
	golang.org/x/sys v0.36.0 // indirect
)
