package fusefs

import "errors"

var (
	// ErrExists is returned by Add when the name is taken.
	ErrExists = errors.New("fusefs: a stack of that name exists")
	// ErrNotFound is returned by Remove for an unknown name.
	ErrNotFound = errors.New("fusefs: no such stack")
	// ErrBusy is returned by Remove when the file is open and force is not set.
	ErrBusy = errors.New("fusefs: stack file is open")
	// ErrName is returned by Add for a name that cannot be a file name.
	ErrName = errors.New("fusefs: bad stack name")
)
