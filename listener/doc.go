// Package listener owns pgmirror's connection to the notification stream:
// the payload format the triggers of triggers.sql write, its decoder, and
// (from the sync-engine issue on) the pq.Listener lifecycle that feeds
// decoded changes to the mirror.
package listener
