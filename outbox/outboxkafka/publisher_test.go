package outboxkafka_test

import (
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/watermill-sls/watermill-sls/outbox/outboxkafka"
)

// The Kafka behaviour (transactions, recovery, read_committed) is tested in package outbox's tests against
// kfake; these cover construction.
func TestConfigValidation(t *testing.T) {
	_, err := outboxkafka.NewTransactionalPublisher(outboxkafka.Config{}, nil)
	if err == nil || !strings.Contains(err.Error(), "Brokers:") || !strings.Contains(err.Error(), "RelayName:") {
		t.Errorf("empty config: %v, want an error naming Brokers and RelayName", err)
	}
	base := sarama.NewConfig()
	base.Producer.Idempotent = false
	p, err := outboxkafka.NewTransactionalPublisher(outboxkafka.Config{Brokers: []string{"127.0.0.1:1"}, RelayName: "r",
		SaramaConfig: base}, nil)
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if base.Producer.Idempotent {
		t.Errorf("NewTransactionalPublisher modified the caller's sarama config")
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close before Recover: %v", err)
	}
}
