// Package eventhub is a small client for the eventhub gRPC API
// (package eventhub.v1, generated into [eventhubv1]).
//
// A [Client] wraps the generated stub: every call takes a
// [context.Context], streaming reads are range-over-func iterators of
// pages, reads are retried with backoff when the hub answers UNAVAILABLE,
// up to [Client.Retry] (streams resume after the last page they delivered,
// and follow streams also when the hub ends them or falls silent), and
// errors match the sentinels of this package with [errors.Is] while
// keeping their gRPC status for [status.Code].
//
// A [Consumer] reads the partitions of a topic and hands each page to user
// code inside a [database/sql] transaction in which it also stores the
// partition's cursor, checking that no other consumer of the same name
// moved it, so the effects of an event are committed exactly once. By
// default it retries without limit while the hub is away, logging each
// failure.
//
// [status.Code]: https://pkg.go.dev/google.golang.org/grpc/status#Code
// [eventhubv1]: https://pkg.go.dev/github.com/eventhub/eventhub/clients/go/eventhubv1
package eventhub
