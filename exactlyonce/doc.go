// Package exactlyonce will give Watermill handlers exactly-once effects: the
// consumed position and the handler's writes commit in one PostgreSQL
// transaction, and exactly-once output into Kafka with transactions.
//
// Not built yet. It will hold: the PostgreSQL offset store (also a resume
// source for the SLS Subscriber), transactional handlers (one message or a
// batch per transaction), position extractors for SLS and Kafka messages,
// and the transactional Kafka sink.
package exactlyonce
