package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// DeleteCrash removes one crash report, e.g. one that recorded something
// its operator must not keep. It is the API's first write operation.
func (s *Store) DeleteCrash(id string) error {
	return s.update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketCrashes)
		if bk.Get([]byte(id)) == nil {
			return fmt.Errorf("crash %s: %w", id, ErrNotFound)
		}
		if err := unindex(tx, []byte(id)); err != nil {
			return err
		}
		return bk.Delete([]byte(id))
	})
}
