package process

import (
	"context"
	"log/slog"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/events"
	"github.com/basalt-storage/basalt/functions/store"
	"github.com/redis/go-redis/v9"
)

// trimStreams trims every topic's stream to what its consumers still need (events.TrimStream),
// and the dead letters to deadLetterAge, every interval until ctx ends. Topics: the scheduler's,
// the results', and the topic of each host of a volume service (its backends' commands travel on
// it: events.BackendTopic), once per host. The legacy per-backend topics are not trimmed: once an
// agent has drained them on its upgrade nothing writes there, and what they keep is what they
// held at the upgrade.
func trimStreams(ctx context.Context, rdb redis.UniversalClient, st *store.Store, interval, deadLetterAge time.Duration,
	logger *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		topics := []string{events.TopicScheduler, events.TopicResults}
		if svcs, err := st.Services(ctx); err == nil {
			seen := map[string]bool{}
			for _, s := range svcs {
				if topic := events.BackendTopic(s.Host); s.Binary == basalt.BinaryVolume && !seen[topic] {
					seen[topic] = true
					topics = append(topics, topic)
				}
			}
		}
		now := time.Now()
		for _, topic := range topics {
			if _, err := events.TrimStream(ctx, rdb, topic, 0, now); err != nil && ctx.Err() == nil {
				logger.Warn("trim a stream", "stream", topic, "err", err)
			}
		}
		if _, err := events.TrimStream(ctx, rdb, events.TopicDeadLetter, deadLetterAge, now); err != nil && ctx.Err() == nil {
			logger.Warn("trim the dead letters", "err", err)
		}
	}
}
