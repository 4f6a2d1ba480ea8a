// userservice is the demo target: a tiny "service" whose Store.GetUser queries a database
// (an in-memory table here) and whose request loop logs every answer once a second.
// The demo injects `nil, error:db is down` into the running process and takes it out again.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"
)

type User struct {
	ID   int
	Name string
}

type Store struct {
	table map[int]User
}

var ErrNotFound = errors.New("user not found")

// GetUser is the database query the chaos experiment targets.
//
//go:noinline
func (s *Store) GetUser(id int) (*User, error) {
	u, ok := s.table[id]
	if !ok {
		return nil, ErrNotFound
	}
	return &u, nil
}

func main() {
	store := &Store{table: map[int]User{1: {1, "alice"}, 2: {2, "bob"}}}
	fmt.Printf("userservice pid %d serving\n", os.Getpid())
	for i := 0; ; i++ {
		id := 1 + i%2
		u, err := store.GetUser(id)
		if err != nil {
			fmt.Printf("GET /users/%d -> 500 %v\n", id, err)
		} else {
			fmt.Printf("GET /users/%d -> 200 %s\n", id, u.Name)
		}
		time.Sleep(time.Second)
	}
}
