module github.com/wbengine/wbengine/examples/sqlitevfs

go 1.26.0

replace github.com/wbengine/wbengine => ../..

require (
	github.com/ncruces/go-sqlite3 v0.37.0
	github.com/wbengine/wbengine v0.0.0-00010101000000-000000000000
)

require (
	github.com/iceber/iouring-go v0.0.0-20230403020409-002cfd2e2a90 // indirect
	github.com/ncruces/go-sqlite3-wasm/v6 v6.5.35401 // indirect
	github.com/ncruces/julianday v1.0.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
