package eventhub

import "hash/fnv"

// PartitionFor returns the partition that holds the events of key in a
// topic of partitionCount partitions: fnv1a_64(utf8(key)) % partitionCount,
// as the proto documents. It panics if partitionCount is 0.
func PartitionFor(key string, partitionCount uint32) uint32 {
	if partitionCount == 0 {
		panic("eventhub: PartitionFor with a partition count of 0")
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return uint32(h.Sum64() % uint64(partitionCount))
}
