package file

// TempPrefix exposes the name prefix of files being created, for tests that simulate a crash.
const TempPrefix = tempPrefix
