package eventhub

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Sentinel errors, one per gRPC status code the hub returns. Errors from a
// Client match them with errors.Is; status.Code still gives the code.
var (
	ErrInvalidArgument    = errors.New("eventhub: invalid argument")
	ErrNotFound           = errors.New("eventhub: not found")
	ErrAlreadyExists      = errors.New("eventhub: already exists")
	ErrFailedPrecondition = errors.New("eventhub: failed precondition")
	ErrResourceExhausted  = errors.New("eventhub: resource exhausted")
	ErrOutOfRange         = errors.New("eventhub: out of range")
	ErrUnauthenticated    = errors.New("eventhub: unauthenticated")
	ErrPermissionDenied   = errors.New("eventhub: permission denied")
	ErrUnavailable        = errors.New("eventhub: unavailable")
)

var sentinelCodes = map[error]codes.Code{
	ErrInvalidArgument:       codes.InvalidArgument,
	ErrNotFound:              codes.NotFound,
	ErrAlreadyExists:         codes.AlreadyExists,
	ErrFailedPrecondition:    codes.FailedPrecondition,
	ErrResourceExhausted:     codes.ResourceExhausted,
	ErrOutOfRange:            codes.OutOfRange,
	ErrUnauthenticated:       codes.Unauthenticated,
	ErrPermissionDenied:      codes.PermissionDenied,
	ErrUnavailable:           codes.Unavailable,
	context.Canceled:         codes.Canceled,
	context.DeadlineExceeded: codes.DeadlineExceeded,
}

// Error is a failed call: the gRPC status the hub (or the transport)
// returned.
type Error struct {
	Code    codes.Code
	Message string
	status  *status.Status
}

func (e *Error) Error() string {
	return fmt.Sprintf("eventhub: %s: %s", e.Code, e.Message)
}

// Is reports whether target is the sentinel of e's code. Canceled and
// DeadlineExceeded match the context errors.
func (e *Error) Is(target error) bool {
	code, ok := sentinelCodes[target]
	return ok && code == e.Code
}

// GRPCStatus returns the status, so that status.Code and status.FromError
// work on e and on errors wrapping it.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// VersionConflictError is returned by Append when an expected key version
// does not hold (FAILED_PRECONDITION). It unwraps to the *Error.
type VersionConflictError struct {
	// Key is the key whose version did not match.
	Key string
	// ActualVersion is the key's version when the Append was refused.
	ActualVersion uint64
	Err           *Error
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("eventhub: version conflict on key %q (actual version %d): %s", e.Key, e.ActualVersion, e.Err.Message)
}

func (e *VersionConflictError) Unwrap() error { return e.Err }

// CursorConflictError is returned by a Consumer when the stored cursor of a
// partition is no longer the one it read the page from: another consumer
// with the same Name (a replica, or the other instance during a rolling
// deploy) stored its own meanwhile, after applying that page itself. The
// transaction, with the Handler's effects, was rolled back, so the page is
// applied once. Running the Consumer again resumes from the stored cursor.
type CursorConflictError struct {
	Consumer, Topic string
	Partition       uint32
	// Expected is the stored cursor the consumer read from; empty when it
	// expected none to be stored yet.
	Expected string
}

func (e *CursorConflictError) Error() string {
	expected := "no stored cursor"
	if e.Expected != "" {
		expected = fmt.Sprintf("stored cursor %q", e.Expected)
	}
	return fmt.Sprintf("eventhub: cursor conflict: consumer %q, topic %q, partition %d expected %s, "+
		"but another consumer of the same name stored its own (the transaction was rolled back)",
		e.Consumer, e.Topic, e.Partition, expected)
}

// wrap turns an error of a gRPC call into an *Error (or a
// *VersionConflictError when the trailer names the conflicting key).
func wrap(err error, trailer metadata.MD) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	if e.Code == codes.FailedPrecondition {
		keys, versions := trailer.Get("eventhub-key"), trailer.Get("eventhub-actual-version")
		if len(keys) > 0 && len(versions) > 0 {
			// The hub percent-encodes the key so that any UTF-8 key fits in ASCII metadata.
			key, kerr := url.PathUnescape(keys[0])
			if kerr != nil {
				key = keys[0]
			}
			if v, perr := strconv.ParseUint(versions[0], 10, 64); perr == nil {
				return &VersionConflictError{Key: key, ActualVersion: v, Err: e}
			}
		}
	}
	return e
}
