// Package testutil holds the fixtures the project's tests run against: a real PostgreSQL server, Kafka brokers
// speaking the wire protocol, and the SLS emulator wiring. Tests use these instead of hand-written fakes.
//
// # PostgreSQL
//
// [Postgres] and [PostgresURL] give each call a fresh database, dropped when the test ends. The server is the one
// at DATABASE_URL (make test starts a throwaway cluster and sets it, see scripts/with-postgres.sh). When
// DATABASE_URL is unset, the fixture starts a cluster itself from the system's PostgreSQL binaries, once per test
// binary, so that plain `go test ./...` works on a machine with PostgreSQL installed. That cluster is stopped by
// [Main], which every package using [Postgres] must call from its TestMain:
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
//
// Tests never skip because a service is missing: without DATABASE_URL and without PostgreSQL's server binaries
// they fail, saying what to install.
//
// # Kafka
//
// [Kafka] and [KafkaWithPartitions] return seed broker addresses: an in-process kfake cluster on loopback per
// call, or, when KAFKA_BROKERS is set, those brokers with the topics created on them.
//
// # The aliyun-log-go-sdk in tests
//
// Tests that run the SDK's own producer and consumer libraries against the emulator share a harness (sdk.go):
// [SDKLogger] keeps the SDK's chatty go-kit logging and prints it only on failure, [Poll] and [Within] bound every
// wait, [SDKGoroutines] and [NoSDKGoroutines] check that no SDK goroutine outlives the test, and
// [PreinitSDKClient] and [HeartbeatFence] work around two data races inside SDK v0.1.127 that `go test -race`
// reports otherwise. [NewSDKConsumerWorker] builds a consumer worker with all of it applied.
//
// # Sizes
//
// Tests that have a full-size variant (crash loops, soak runs, scale) pick their numbers with [Soak] or
// [SoakOr]; `make soak` sets WSLS_SOAK=1.
package testutil
