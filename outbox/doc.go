// Package outbox will provide a transactional outbox for microservices:
// messages written in the same PostgreSQL transaction as the business rows,
// and a Relay that publishes them through any Watermill Publisher (SLS,
// Kafka) in order per key.
//
// Not built yet. It will hold: a Publisher bound to a pgx transaction and a
// Relay (FOR UPDATE SKIP LOCKED claims, LISTEN/NOTIFY wake-ups with polling
// fallback, retries with backoff, parking after repeated failures, retention
// of delivered rows).
package outbox
