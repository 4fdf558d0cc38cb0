package bench

// Against a cluster (several --server addresses) the users are spread over
// the nodes so that what one user sends reaches the others through the
// cluster rather than through one node's memory: that is what a cluster
// adds, and what its figures should measure. Against one server every user
// is on node 0.

// roleOffset moves a role's first user that many nodes on, so that the two
// ends of a conversation start on different nodes: a dm pair's "b" sits
// one node after its "a", and a history subscriber ("h") one node after
// the room's filler.
var roleOffset = map[string]int{"b": 1, "h": 1}

// nodeOf returns the node of the j-th user of role when there are nodes
// nodes: a role's users go round the nodes in turn, starting at the role's
// offset. With dm's roles, pair j's members are on nodes j and j+1 (mod
// nodes), different whenever there are two nodes or more; with room's,
// senders and subscribers alike go round, so with N nodes a message
// crosses nodes to (N-1)/N of the subscribers.
func nodeOf(role string, j, nodes int) int {
	if nodes <= 1 {
		return 0
	}
	return (j + roleOffset[role]) % nodes
}

// placement is where one user is: its node, and its rank among that
// node's users, which picks its connections from the node's.
type placement struct{ node, rank int }

// place assigns users to nodes, counts[i] users of roles[i] for each i, in
// the order their names are made.
func place(roles []string, counts []int, nodes int) []placement {
	var ps []placement
	ranks := make([]int, max(nodes, 1))
	for i, role := range roles {
		for j := range counts[i] {
			k := nodeOf(role, j, nodes)
			ps = append(ps, placement{node: k, rank: ranks[k]})
			ranks[k]++
		}
	}
	return ps
}

// share is a node's part of total connections when users of all n users
// are on it: in proportion, rounded up, at least one and no more than one
// per user. A node with no users gets none.
func share(total, users, n int) int {
	if users == 0 {
		return 0
	}
	return max(1, min(users, (total*users+n-1)/n))
}
