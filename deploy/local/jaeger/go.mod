module switchboard.local/jaeger

go 1.24
