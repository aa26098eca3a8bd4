package loopdev

// SetForceLegacy makes Attach use LOOP_SET_FD + LOOP_SET_STATUS64 (the path
// for kernels before 5.8) and returns a function that restores the default.
func SetForceLegacy(v bool) (restore func()) {
	old := forceLegacy
	forceLegacy = v
	return func() { forceLegacy = old }
}
